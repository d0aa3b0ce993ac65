#!/usr/bin/env python3
"""Makes the BPE parity test's tokenizer and its reference token ids (docs/tokenization.md).

The C++ BpeTokenizer (worker/data/bpe_tokenizer.h) must produce exactly the ids of Hugging Face
`tokenizers`. Bazel's test sandbox is offline, so the reference is computed here, once, and checked
in; //tests/tokenizer:bpe_parity_test compares against it. Run from the repository root:

    python3 -m venv /tmp/tokvenv
    /tmp/tokvenv/bin/pip install tokenizers==0.22.2 transformers==4.57.6
    /tmp/tokvenv/bin/python tests/tokenizer/make_tokenizer.py            # references only
    /tmp/tokvenv/bin/python tests/tokenizer/make_tokenizer.py --train    # retrain, then references

--train trains a byte-level BPE (vocabulary 2048, `<|endoftext|>` as an added special token) on
Tiny Shakespeare plus a few multilingual sentences written for this test, and writes
tokenizer.json and the same model as GPT-2's vocab.json + merges.txt. Without --train the
committed tokenizer is kept and only the references are recomputed. Either way it writes:

  corpus.txt        the tricky cases below, one after another (a whole-text case of its own)
  reference.json    for each case and each tokenizer variant, the ids from `tokenizers`; for the
                    vocab.json + merges.txt files also from transformers' slow GPT2Tokenizer (a
                    second, independent implementation: pure Python, the `regex` module), and
                    the script fails unless both agree; for all of Tiny Shakespeare the id count
                    and SHA-256 of the ids as little-endian uint16
  unicode_classes.json  how the ByteLevel pre-tokenizer's regex classes every code point
                    (letter, number, whitespace, other), probed through `tokenizers` itself

The variants are made from tokenizer.json in memory, the same way the C++ test makes them:
"prefix_space" sets pre_tokenizer.add_prefix_space, "no_regex" sets pre_tokenizer.use_regex to
false, "ignore_merges" sets model.ignore_merges.
"""

import argparse
import copy
import hashlib
import json
import os
import struct
import sys

import tokenizers
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GPT2Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SHAKESPEARE = os.path.join(ROOT, "deploy/local/demo/tinyshakespeare.txt")
VOCAB_SIZE = 2048
EOT = "<|endoftext|>"

# Written for this test (not taken from anywhere), so that the trained merges cover some
# multi-byte UTF-8 and the corpus below exercises them.
EXTRA_TRAINING_TEXT = [
    "The naïve café owner in Zürich served crème brûlée and a smörgåsbord to the façade painters.",
    "Größe, Straße, Übermut: über alles. Déjà vu, résumé, São Paulo, Ærøskøbing, Łódź.",
    "Ελληνικά γράμματα και Русский текст: привет, мир. Здравствуйте, друзья.",
    "東京の天気は晴れです。日本語のテキストと中文字符，还有한국어 문장도 있습니다.",
    "Emoji: 👍 😀 🎉 ❤️ and numbers ٣٤٥ Ⅻ ½ ²³.",
]

# The tricky cases of corpus.txt: contractions, digits, punctuation runs, spaces, newlines, tabs,
# non-ASCII letters, CJK, emoji, the special token inline, trailing spaces, Unicode whitespace.
CASES = [
    "I'm sure you'll see it's fine; we've done it, they're here, he'd go, I'd've.",
    "Upper-case contractions split differently: I'LL, IT'S, WE'VE, DON'T.",
    "O'Brien's 'quoted' ''double'' '''triple''' and a lone ' apostrophe; don\u2019t (U+2019).",
    "In 1984, 3.14159 and 1,000,000 people; 2nd 3rd 42nd 007 x2y3 ٣٤ Ⅻ ½ ² 10\u00bd.",
    "Wait... what?!?! --- *** ((nested)) <html></html> @user #tag $100 & 50% ~~~ ====== !!!",
    "a  b   c    d     e",
    "   leading spaces and trailing spaces   ",
    "line one\nline two\n\nline four\n\n\nline seven",
    "windows\r\nline\r\n\r\nend",
    "\tcol1\tcol2\t\tcol4\t",
    "tab then space \t x and space then tab \t\t y",
    "naïve café résumé Zürich São Paulo Straße Ελληνικά Русский текст עברית العربية हिन्दी",
    "东京都 日本語のテキスト 中文字符 한국어 문장",
    "emoji 👍🏽 😀 👨\u200d👩\u200d👧\u200d👦 🇫🇷 ❤️ end",
    "end of one document.<|endoftext|>Start of the next",
    "<|endoftext|>at the start, and at the end<|endoftext|>",
    " <|endoftext|> with spaces around <|endoftext|>\n",
    "<|endoftext|><|endoftext|>doubled",
    "almost special: <|endoftext| and <|endoftext|>> and <<|endoftext|>",
    "no\u00a0break\u00a0space, ideographic\u3000space, em\u2003space, NEL\u0085here, zero\u200bwidth",
    "combining e\u0301 versus \u00e9, n\u0303 versus \u00f1",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "1234567890123456789012345678901234567890 ..............................................",
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n",
    "trailing space at the end of a text ",
    "trailing newlines\n\n",
    "ends with a tab\t",
]

# Short edge cases (reference ids only, not in corpus.txt).
EDGE_CASES = [
    "",
    " ",
    "  ",
    "\n",
    " \n ",
    "\t",
    "x",
    " x",
    "  x",
    "\n\nx",
    "'s",
    "'",
    " '",
    "'''s",
    "x  ",
    EOT,
    EOT + EOT,
    "a" + EOT + "b",
    " " + EOT + " ",
    "<|endoftext",
    EOT[1:],
]


def train(path):
    """Trains the test tokenizer and saves it at `path`."""
    with open(SHAKESPEARE, encoding="utf-8") as f:
        docs = f.read().split("\n\n")
    docs += EXTRA_TRAINING_TEXT * 3  # min_frequency 2: make their pairs count
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer)
    tok.save(path, pretty=True)


def write_gpt2_files(spec, vocab_path, merges_path):
    """The model of tokenizer.json `spec` as GPT-2's vocab.json and merges.txt."""
    vocab = spec["model"]["vocab"]
    with open(vocab_path, "w", encoding="utf-8") as f:
        json.dump(dict(sorted(vocab.items(), key=lambda kv: kv[1])), f, ensure_ascii=False)
    with open(merges_path, "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for merge in spec["model"]["merges"]:
            a, b = merge if isinstance(merge, list) else merge.split(" ")
            f.write(f"{a} {b}\n")


def variants(spec):
    """name -> tokenizer.json spec, as the C++ test derives them."""
    out = {"base": spec}
    v = copy.deepcopy(spec)
    v["pre_tokenizer"]["add_prefix_space"] = True
    out["prefix_space"] = v
    v = copy.deepcopy(spec)
    v["pre_tokenizer"]["use_regex"] = False
    out["no_regex"] = v
    v = copy.deepcopy(spec)
    v["model"]["ignore_merges"] = True
    out["ignore_merges"] = v
    return out


def gpt2_references(vocab_path, merges_path, texts):
    """Ids for vocab.json + merges.txt from both `tokenizers` and transformers' slow tokenizer."""
    hf = Tokenizer(models.BPE.from_file(vocab_path, merges_path))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([EOT])
    slow = GPT2Tokenizer(vocab_path, merges_path)
    assert not slow.is_fast
    ids = []
    for text in texts:
        a = hf.encode(text).ids
        b = slow.encode(text)
        if a != b:
            sys.exit(f"tokenizers and GPT2Tokenizer disagree on {text!r}:\n{a}\n{b}")
        ids.append(a)
    return ids


def unicode_classes(tok):
    """[first, last, class] ranges: how the ByteLevel regex classes each code point."""

    def pieces(s):
        return len(tok.pre_tokenizer.pre_tokenize_str(s))

    ranges = []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue  # surrogates are not text
        c = chr(cp)
        if pieces("a" + c) == 1:  # " ?\p{L}+" took both
            k = "L"
        elif pieces("1" + c) == 1:  # " ?\p{N}+"
            k = "N"
        elif pieces("!" + c) == 1:  # " ?[^\s\p{L}\p{N}]+"
            k = "O"
        else:
            k = "S"  # \s
        if ranges and ranges[-1][2] == k and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp, k])
    return ranges


def ids_digest(ids):
    assert all(0 <= i < 65536 for i in ids)
    return hashlib.sha256(struct.pack(f"<{len(ids)}H", *ids)).hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", action="store_true", help="retrain tokenizer.json first")
    parser.add_argument("--skip-unicode", action="store_true",
                        help="keep unicode_classes.json (probing every code point takes a while)")
    args = parser.parse_args()

    tokenizer_path = os.path.join(HERE, "tokenizer.json")
    vocab_path = os.path.join(HERE, "vocab.json")
    merges_path = os.path.join(HERE, "merges.txt")
    if args.train:
        train(tokenizer_path)
    with open(tokenizer_path, encoding="utf-8") as f:
        spec = json.load(f)
    write_gpt2_files(spec, vocab_path, merges_path)

    corpus = "\n".join(CASES) + "\n"
    with open(os.path.join(HERE, "corpus.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(corpus)
    texts = CASES + EDGE_CASES + [corpus]
    names = [f"case {i}" for i in range(len(CASES))]
    names += [f"edge {i}" for i in range(len(EDGE_CASES))] + ["corpus.txt"]

    tokenizers_by_variant = {
        name: Tokenizer.from_str(json.dumps(v)) for name, v in variants(spec).items()
    }
    gpt2_ids = gpt2_references(vocab_path, merges_path, texts)
    cases = []
    for i, (name, text) in enumerate(zip(names, texts)):
        ids = {v: t.encode(text).ids for v, t in tokenizers_by_variant.items()}
        ids["vocab_merges"] = gpt2_ids[i]
        base = tokenizers_by_variant["base"]
        # The decode the C++ test checks: the text back, exactly.
        assert base.decode(ids["base"], skip_special_tokens=False) == text, name
        cases.append({"name": name, "text": text, "ids": ids})

    with open(SHAKESPEARE, encoding="utf-8") as f:
        shakespeare = f.read()
    whole = {}
    for v, t in tokenizers_by_variant.items():
        if v == "no_regex":
            continue  # one 1 MB word: slow in `tokenizers` and says nothing new
        ids = t.encode(shakespeare).ids
        whole[v] = {"count": len(ids), "sha256": ids_digest(ids)}

    reference = {
        "generator": "tests/tokenizer/make_tokenizer.py",
        "tokenizers_version": tokenizers.__version__,
        "transformers_version": transformers.__version__,
        "vocab_size": max(spec["model"]["vocab"].values()) + 1,
        "tinyshakespeare": whole,
        "cases": cases,
    }
    with open(os.path.join(HERE, "reference.json"), "w", encoding="utf-8") as f:
        f.write("{\n")
        for key in ["generator", "tokenizers_version", "transformers_version", "vocab_size",
                    "tinyshakespeare"]:
            f.write(f"  {json.dumps(key)}: {json.dumps(reference[key], ensure_ascii=False)},\n")
        f.write('  "cases": [\n')
        for i, case in enumerate(cases):
            sep = "," if i + 1 < len(cases) else ""
            f.write(f"    {json.dumps(case, ensure_ascii=False)}{sep}\n")
        f.write("  ]\n}\n")

    if not args.skip_unicode:
        ranges = unicode_classes(tokenizers_by_variant["base"])
        with open(os.path.join(HERE, "unicode_classes.json"), "w", encoding="utf-8") as f:
            f.write('{"generator": "tests/tokenizer/make_tokenizer.py", ')
            f.write(f'"tokenizers_version": {json.dumps(tokenizers.__version__)},\n')
            f.write(' "ranges": [\n')
            for i, r in enumerate(ranges):
                sep = "," if i + 1 < len(ranges) else ""
                f.write(f"  {json.dumps(r)}{sep}\n")
            f.write("]}\n")
    print(f"wrote {len(cases)} cases; tokenizers {tokenizers.__version__}, "
          f"transformers {transformers.__version__}")


if __name__ == "__main__":
    main()
