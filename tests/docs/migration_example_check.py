"""Checks for migration_example_test.sh: docs/migrating-from-deepspeed.md against its example.

    migration_example_check.py blocks GUIDE EXAMPLE_DIR
    migration_example_check.py validated GUIDE EFFECTIVE.json STDERR_FILE
    migration_example_check.py inline JOB.json OUT.json
    migration_example_check.py same EFFECTIVE_FROM_FILE.json EFFECTIVE_INLINE.json
    migration_example_check.py batch EFFECTIVE.json TB MB GAS
    migration_example_check.py without_gas DS_CONFIG.json OUT.json
    migration_example_check.py shorten JOB.json
    migration_example_check.py metrics METRICS.jsonl STEPS
    migration_example_check.py model MODEL.bin
    migration_example_check.py stored STATUS.json EFFECTIVE.json
"""

import json
import os
import re
import struct
import sys

DS_NOTE_PREFIX = "deepspeed_config: DeepSpeed keys read from"
LR_NOTE = ("optimizer.params.lr: not used; the WarmupDecayLR schedule sets the learning rate "
           "(DeepSpeed's behaviour)")
DSTRAIN_KEYS = {"model", "data", "job", "notes", "deepspeed_config"}


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def fenced_block_after(text, marker):
    """The body of the first fenced code block after the HTML comment `marker`."""
    at = text.find(f"<!-- {marker} -->")
    if at < 0:
        fail(f"the guide has no <!-- {marker} --> marker")
    m = re.compile(r"```[a-z]*\n(.*?)```", re.S).search(text, at)
    if m is None:
        fail(f"no code block after <!-- {marker} -->")
    return m.group(1)


def blocks(guide_path, example_dir):
    guide = open(guide_path).read()
    for name in ("ds_config.json", "job.json"):
        shown = fenced_block_after(guide, f"example: {name}")
        actual = open(os.path.join(example_dir, name)).read()
        if shown != actual:
            fail(f"the guide's {name} block is not docs/examples/deepspeed/{name}:\n"
                 f"--- guide\n{shown}--- file\n{actual}")
    excerpt = fenced_block_after(guide, "example excerpt: train.py")
    if excerpt not in open(os.path.join(example_dir, "train.py")).read():
        fail(f"the guide's train.py excerpt is not a part of train.py:\n{excerpt}")
    ds = json.load(open(os.path.join(example_dir, "ds_config.json")))
    if DSTRAIN_KEYS & set(ds):
        fail(f"ds_config.json holds dstrain keys {sorted(DSTRAIN_KEYS & set(ds))}")
    job = json.load(open(os.path.join(example_dir, "job.json")))
    if job.get("deepspeed_config") != "ds_config.json":
        fail("job.json does not name ds_config.json")
    print("the guide's blocks are the example's files")


def validated(guide_path, effective_path, stderr_path):
    guide = open(guide_path).read()
    shown = fenced_block_after(guide, "example output: validate stderr")
    actual = open(stderr_path).read()
    if shown != actual:
        fail(f"validate's stderr differs from the guide's:\n--- guide\n{shown}--- actual\n{actual}")
    e = json.load(open(effective_path))
    notes = e["notes"]
    if not (notes and notes[0].startswith(DS_NOTE_PREFIX) and notes[0].endswith(
            '/ds_config.json" and merged here')):
        fail(f"the first note is not about deepspeed_config: {notes}")
    if LR_NOTE not in notes or LR_NOTE not in guide.replace("\n", " "):
        fail(f"the note on optimizer.params.lr is not in the notes or not in the guide: {notes}")
    if len(notes) != 3:
        fail(f"the guide says three notes; got {notes}")
    expect = {
        ("bf16", "enabled"): True,
        ("zero_optimization", "stage"): 2,
        ("zero_optimization", "overlap_comm"): True,
        ("zero_optimization", "reduce_bucket_size"): 50000000,
        ("optimizer", "type"): "AdamW",
        ("scheduler", "type"): "WarmupDecayLR",
        ("gradient_clipping",): 1.0,
        ("steps_per_print",): 10,
        ("job", "world_size"): 2,
        ("job", "checkpoint_every"): 200,
        ("model", "padded_vocab_size"): 256,
        ("data", "seq_len"): 128,
    }
    for path, value in expect.items():
        got = e
        for key in path:
            got = got[key]
        if got != value:
            fail(f"{'.'.join(path)}: expected {value!r}, got {got!r}")
    if not e["data"]["train"].startswith("/"):
        fail("data.train is not made absolute")
    print("validate prints what the guide says")


def inline(job_path, out_path):
    job = json.load(open(job_path))
    ds = json.load(open(os.path.join(os.path.dirname(job_path), job.pop("deepspeed_config"))))
    merged = dict(ds)
    merged.update(job)
    json.dump(merged, open(out_path, "w"), indent=2)


def same(from_file_path, inline_path):
    a, b = json.load(open(from_file_path)), json.load(open(inline_path))
    notes_a, notes_b = a.pop("notes"), b.pop("notes")
    if a != b:
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        fail(f"deepspeed_config and the inline keys give different configurations at {keys}")
    if [n for n in notes_a if not n.startswith(DS_NOTE_PREFIX)] != notes_b:
        fail(f"the notes differ beyond the deepspeed_config note:\n{notes_a}\n{notes_b}")
    print("deepspeed_config and the inline form give the same configuration")


def batch(effective_path, tb, mb, gas):
    e = json.load(open(effective_path))
    got = (e["train_batch_size"], e["train_micro_batch_size_per_gpu"],
           e["gradient_accumulation_steps"])
    if got != (int(tb), int(mb), int(gas)):
        fail(f"batch triple {got}, expected {(tb, mb, gas)}")


def without_gas(ds_path, out_path):
    ds = json.load(open(ds_path))
    del ds["gradient_accumulation_steps"]
    json.dump(ds, open(out_path, "w"), indent=2)


def shorten(job_path):
    job = json.load(open(job_path))
    job["job"].update(train_steps=4, checkpoint_every=2, eval_every=2, eval_batches=2,
                      sample_tokens=16)
    json.dump(job, open(job_path, "w"), indent=2)


def metrics(path, steps):
    rows = [json.loads(line) for line in open(path)]
    if [r["step"] for r in rows] != list(range(1, int(steps) + 1)):
        fail(f"metrics steps {[r['step'] for r in rows]}")
    for r in rows:
        if not r["loss"] > 0 or r.get("skipped"):
            fail(f"bad step {r}")
    if "val_loss" not in rows[-1]:
        fail("no validation loss at the last step")


def model(path):
    with open(path, "rb") as f:
        header = struct.unpack("<256i", f.read(1024))
    if header[0] != 20240326 or header[1] != 3:
        fail(f"{path}: not an llm.c version-3 model file (header {header[:8]})")
    # maxT, V, L, NH, C, Vp
    if header[2:8] != (128, 256, 4, 4, 128, 256):
        fail(f"{path}: shape {header[2:8]}")


def stored(status_path, effective_path):
    job = json.load(open(status_path))["job"]
    spec = json.loads(job["spec_json"])
    e = json.load(open(effective_path))
    notes_spec, notes_e = spec.pop("notes"), e.pop("notes")
    if spec != e:
        keys = sorted(k for k in set(spec) | set(e) if spec.get(k) != e.get(k))
        fail(f"the coordinator stored another configuration than validate printed, at {keys}")
    if notes_spec != [n for n in notes_e if not n.startswith(DS_NOTE_PREFIX)]:
        fail(f"stored notes {notes_spec}, validate's {notes_e}")
    print("the coordinator stored the configuration validate printed")


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    globals()[command](*args)
