#include "worker/offload/io_queue.h"

#include <liburing.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>

#include "absl/strings/str_cat.h"

namespace dstrain::offload {
namespace {

class UringQueue final : public IoQueue {
 public:
  explicit UringQueue(int depth) : depth_(depth) {}
  ~UringQueue() override {
    if (initialised_) io_uring_queue_exit(&ring_);
  }

  absl::Status Init() {
    const int r = io_uring_queue_init(static_cast<unsigned>(depth_), &ring_, 0);
    if (r < 0) {
      return absl::UnavailableError(absl::StrCat("io_uring_queue_init: ", std::strerror(-r)));
    }
    initialised_ = true;
    return absl::OkStatus();
  }

  int depth() const override { return depth_; }
  const char* name() const override { return "io_uring"; }

  void Prepare(const IoRequest& r) override {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    // The ring has depth_ entries and the caller keeps at most depth_ outstanding.
    if (r.write) {
      io_uring_prep_write(sqe, r.fd, r.buf, r.len, static_cast<uint64_t>(r.offset));
    } else {
      io_uring_prep_read(sqe, r.fd, r.buf, r.len, static_cast<uint64_t>(r.offset));
    }
    io_uring_sqe_set_data64(sqe, r.tag);
  }

  absl::Status Submit() override {
    for (;;) {
      const int r = io_uring_submit(&ring_);
      if (r >= 0) return absl::OkStatus();
      if (r == -EINTR || r == -EAGAIN) continue;
      return absl::InternalError(absl::StrCat("io_uring_submit: ", std::strerror(-r)));
    }
  }

  absl::StatusOr<std::vector<IoCompletion>> Reap() override {
    io_uring_cqe* cqe = nullptr;
    for (;;) {
      const int r = io_uring_wait_cqe(&ring_, &cqe);
      if (r == 0) break;
      if (r == -EINTR) continue;
      return absl::InternalError(absl::StrCat("io_uring_wait_cqe: ", std::strerror(-r)));
    }
    std::vector<IoCompletion> out;
    unsigned head;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      out.push_back({io_uring_cqe_get_data64(cqe), cqe->res});
    }
    io_uring_cq_advance(&ring_, static_cast<unsigned>(out.size()));
    return out;
  }

 private:
  const int depth_;
  io_uring ring_{};
  bool initialised_ = false;
};

class SyncQueue final : public IoQueue {
 public:
  explicit SyncQueue(int depth) : depth_(depth) {}
  int depth() const override { return depth_; }
  const char* name() const override { return "pread/pwrite"; }
  void Prepare(const IoRequest& r) override { prepared_.push_back(r); }
  absl::Status Submit() override {
    for (const IoRequest& r : prepared_) {
      ssize_t n;
      do {
        n = r.write ? pwrite(r.fd, r.buf, r.len, r.offset) : pread(r.fd, r.buf, r.len, r.offset);
      } while (n < 0 && errno == EINTR);
      done_.push_back({r.tag, n < 0 ? -static_cast<int64_t>(errno) : static_cast<int64_t>(n)});
    }
    prepared_.clear();
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<IoCompletion>> Reap() override {
    if (done_.empty()) return absl::FailedPreconditionError("Reap with nothing submitted");
    std::vector<IoCompletion> out(done_.begin(), done_.end());
    done_.clear();
    return out;
  }

 private:
  const int depth_;
  std::vector<IoRequest> prepared_;
  std::deque<IoCompletion> done_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<IoQueue>> NewUringQueue(int depth) {
  auto q = std::make_unique<UringQueue>(depth);
  absl::Status s = q->Init();
  if (!s.ok()) return s;
  return q;
}

std::unique_ptr<IoQueue> NewSyncQueue(int depth) { return std::make_unique<SyncQueue>(depth); }

}  // namespace dstrain::offload
