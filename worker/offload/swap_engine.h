// SwapEngine: moves aligned host buffers to and from files at the disk's speed, asynchronously,
// for ZeRO-Infinity's NVMe offload (docs/offload.md).
//
//   SwapEngine::Options o;             // from the job's aio block (OptionsFromAio)
//   DT_ASSIGN_OR_RETURN(auto engine, SwapEngine::Create(o));
//   SwapEngine::Ticket t = engine->Read(file, /*offset=*/0, buf, /*len=*/64 << 20);
//   ... compute ...
//   DT_RETURN_IF_ERROR(engine->Wait(t));
//
// A transfer is cut into requests of aio.block_size bytes, dealt to aio.intra_op_parallelism I/O
// threads in contiguous runs (one sequential stream each); each thread keeps up to
// aio.queue_depth of its requests in flight on its own io_uring (pread/pwrite where
// the kernel refuses io_uring; backend() says which). A short transfer is finished by further
// requests for the rest; an error fails the transfer with the file, the direction, the offset and
// the error (kDataLoss for a read past the end of the file, kResourceExhausted for ENOSPC,
// kInternal otherwise), and the transfer's remaining requests are dropped. Buffers, offsets and
// lengths are multiples of kIoAlign (the files are opened O_DIRECT); the buffer must stay alive
// and untouched until Wait returns. Thread-safe; Wait on each ticket once.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/config/config.h"
#include "worker/offload/io_queue.h"

namespace dstrain::offload {

// An open file the engine moves bytes to and from (swap_file.h makes them).
struct FileRef {
  int fd = -1;
  std::string path;  // for errors
};

class SwapEngine {
 public:
  struct Options {
    int64_t block_size = 1 << 20;
    int queue_depth = 8;
    int threads = 1;
    bool single_submit = false;
    bool overlap_events = true;
    // Makes each thread's queue (tests inject faults here); default: io_uring, else pread/pwrite.
    std::function<absl::StatusOr<std::unique_ptr<IoQueue>>(int depth)> make_queue;
  };
  static Options OptionsFromAio(const config::AioConfig& aio);

  struct Transfer;  // swap_engine.cc
  using Ticket = std::shared_ptr<Transfer>;

  // kInvalidArgument for sizes that are not positive or a block size that is not a multiple of
  // kIoAlign.
  static absl::StatusOr<std::unique_ptr<SwapEngine>> Create(Options options);
  ~SwapEngine();  // waits for the requests in flight

  Ticket Read(const FileRef& file, int64_t offset, void* buf, int64_t len);
  Ticket Write(const FileRef& file, int64_t offset, const void* buf, int64_t len);
  // Waits for the transfer; its error, if any.
  absl::Status Wait(const Ticket& ticket);
  // Whether the transfer has finished (then Wait returns at once); never blocks.
  static bool Done(const Ticket& ticket);

  // "io_uring" or "pread/pwrite".
  const char* backend() const { return backend_; }
  const Options& options() const { return options_; }
  int64_t bytes_read() const;
  int64_t bytes_written() const;

 private:
  struct Block {
    Ticket transfer;
    char* buf;
    int64_t offset;
    int64_t len;
  };
  explicit SwapEngine(Options options) : options_(std::move(options)) {}
  Ticket Start(const FileRef& file, bool write, char* buf, int64_t offset, int64_t len);
  void Run(size_t index);

  const Options options_;
  const char* backend_ = "";
  std::vector<std::unique_ptr<IoQueue>> queues_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable work_cv_;             // blocks queued, or stopping
  std::vector<std::deque<Block>> pending_;      // per I/O thread; guarded by mu_
  bool stopping_ = false;                       // guarded by mu_
  int64_t bytes_read_ = 0, bytes_written_ = 0;  // guarded by mu_
};

}  // namespace dstrain::offload
