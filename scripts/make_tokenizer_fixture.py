#!/usr/bin/env python3
"""Writes the reference token ids herd's tokenizer must reproduce, computed by llama.cpp.

llama.cpp (through llama-cpp-python, which compiles and vendors it) tokenizes:
  * smollm2: herd's default model, SmolLM2-135M-Instruct Q4_1 (scripts/fetch-default-model.sh);
  * llama-bpe: Llama 3's vocabulary (the production judge's), and
  * gpt-2: GPT-2's vocabulary,
the last two from the vocabulary-only GGUFs llama.cpp keeps for its own tokenizer tests,
taken from the llama-cpp-python source distribution and stored gzipped next to the fixture.
With --more-vocabularies (the files above are then left as they are), also:
  * llama-spm (Llama 2's SentencePiece vocabulary), qwen2, deepseek-llm, deepseek-coder: more
    of llama.cpp's vocabulary-only GGUFs, stored gzipped next to the fixture likewise;
  * tekken, gpt-4o, chatglm-bpe: Llama 3's vocabulary with tokenizer.ggml.pre set to that
    value (only the pre-tokenizer and its flags differ; herd's test makes the same change);
  * gemma3: Gemma 3's SentencePiece vocabulary, from Gemma 3 270M's GGUF
    (scripts/fetch-gemma3-270m.sh), stored as a vocabulary-only GGUF (metadata, no tensors).

The cases: the 805 AlpacaEval instructions raw; the same rendered through the chat template
(user message only, generation prompt) with special tokens parsed; the 805 reference outputs;
judge prompts (data/prompts/alpaca_eval_fn.txt around instruction and two outputs);
hand-written awkward texts; and, per block of 4096 code points, a probe text around every code
point (this checks the Unicode categories behind the pre-tokenizer regexes). Texts that come
from the repository's data are referenced by index, not copied; long id lists are stored as a
count and a 64-bit FNV-1a digest (of the ids as little-endian u32).

For every vocabulary it also records BOS/EOS, whether BOS is added, the end-of-generation ids,
the token attributes that are not "normal", and digests of every token's piece (the bytes
llama_token_to_piece gives, with special tokens hidden and shown).

Usage: python3 scripts/make_tokenizer_fixture.py [--model PATH] [--out DIR]
       python3 scripts/make_tokenizer_fixture.py --more-vocabularies [--gemma3 PATH] [--out DIR]
       python3 scripts/make_tokenizer_fixture.py --unicode-table
Needs: pip install llama-cpp-python==0.3.36 (CMAKE_ARGS="-DGGML_NATIVE=ON"), jinja2.
"""

import argparse
import ctypes
import gzip
import io
import json
import os
import random
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

LLAMA_CPP_PYTHON = "0.3.36"
REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "engine" / "tests" / "fixtures" / "tokenizer"
VOCAB_FILES = {"llama-bpe": "ggml-vocab-llama-bpe.gguf", "gpt-2": "ggml-vocab-gpt-2.gguf"}
MORE_VOCAB_FILES = {
    "llama-spm": "ggml-vocab-llama-spm.gguf",
    "qwen2": "ggml-vocab-qwen2.gguf",
    "deepseek-llm": "ggml-vocab-deepseek-llm.gguf",
    "deepseek-coder": "ggml-vocab-deepseek-coder.gguf",
}
# tokenizer.ggml.pre values checked on Llama 3's vocabulary.
PRE_OVERRIDES = ["tekken", "gpt-4o", "chatglm-bpe"]
GEMMA3_VOCAB = "gemma-3-270m-vocab.gguf"
PROBE_BLOCK = 4096
# Planes 0-3 (everything assigned up to Unicode 16 but plane 14) and plane 14's tags/selectors.
PROBE_RANGES = [(0x0, 0x40000), (0xE0000, 0xE1000)]
# Id lists longer than this are stored as count + digest.
MAX_INLINE_IDS = 4000


def fnv1a64_ids(ids):
    h = 0xCBF29CE484222325
    for i in ids:
        for b in int(i).to_bytes(4, "little"):
            h ^= b
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def fnv1a64_pieces(pieces):
    h = 0xCBF29CE484222325
    for piece in pieces:
        for b in len(piece).to_bytes(4, "little") + piece:
            h ^= b
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def probe_text(cp_from, cp_to):
    """The same text engine/tests/tokenizer_matches_llama_cpp.rs builds: around every code
    point, the contexts the regexes treat differently (after a letter, after a space,
    doubled, after a digit, before a newline)."""
    parts = []
    for cp in range(cp_from, cp_to):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        parts.append(f"x{c}y {c}{c}1{c} '{c}\n")
    return "".join(parts)


def judge_prompt(template, eval_set, i):
    """output_1 is example i's reference output, output_2 the next example's."""
    return (
        template.replace("{instruction}", eval_set[i]["instruction"])
        .replace("{output_1}", eval_set[i]["output"])
        .replace("{output_2}", eval_set[(i + 1) % len(eval_set)]["output"])
    )


def awkward_texts():
    rng = random.Random(20240601)
    alphabet = (
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        " \t\n\r!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
        "éüßçñøÆŒ你好世界日本語한국어مرحباשלוםनमस्तेΕλληνικάПривет"
        "😀👍🏽🇫🇷\u200d\u0301\u00a0\u3000\u2028٣¼"
    )
    random_text = "".join(rng.choice(alphabet) for _ in range(6000))
    return [
        "",
        " ",
        "  ",
        "   ",
        "\t",
        "\n",
        "\n\n",
        "\n\n\n",
        "\r\n",
        "\r\n\r\n",
        " \n",
        "\n ",
        "a\n\n b",
        "Hello world   ",
        "Hello world\n",
        "Hello world \n\n",
        "   leading spaces",
        "Hello, world!",
        "Hello World HELLO world hello",
        "don't",
        "I'M",
        "I'm",
        "you'll we'VE they're it'd she'S",
        "'s 't 're",
        "''",
        "rock'n'roll O'Neil's",
        "1234567890",
        "3.14159",
        "1,000,000 and 12345678901234567890",
        "v1.2.3 2024-01-01T12:00:00Z",
        " 1 22 333 4444 55555",
        "١٢٣٤٥ ١٢٣",
        "１２３ＡＢＣ",
        "²³¹ ½ ¾ Ⅻ ⅷ",
        "你好，世界！",
        "日本語のテキストです。カタカナ、ひらがな。",
        "한국어 텍스트입니다",
        "مرحبا بالعالم، كيف حالك؟",
        "שלום עולם",
        "नमस्ते दुनिया, यह हिंदी है।",
        "Ελληνικά κείμενα",
        "Привет, мир! Ёжик.",
        "e\u0301 cafe\u0301 café naïve",
        "Z\u0324\u0354\u0367\u0311\u0313a\u0308\u0356\u032dl\u036e\u0312\u036bg\u030c\u0317\u035ao\u0319\u0314",
        "ﬁ ﬂ ß İstanbul ǅ ſ K",
        "zero\u200bwidth\u200cjoin\u200d",
        "\u00a0nbsp\u00a0 \u00a0",
        "\u3000ideographic\u3000space",
        "line\u2028sep\u2029para",
        "next\u0085line",
        "\u000b\u000c vertical tab and form feed",
        "\x00\x01\x1f\x7f controls",
        "😀",
        "👍🏽 👍🏿",
        "👨\u200d👩\u200d👧\u200d👦",
        "🏳️\u200d🌈",
        "🇫🇷🇯🇵🇺🇸",
        "❤️ 1️⃣ #️⃣",
        "🤖🤖🤖 text🤖text",
        "def f(x):\n\treturn x  # tab\n    \tmixed\n\t    indent\n",
        'fn main() {\n    println!("{}", 42);\n}\n',
        '<div class="a">&amp;&lt;</div>',
        "SELECT * FROM t WHERE a >= 10 AND b != 'x';",
        "    " * 10 + "x",
        " " * 100,
        " " * 33 + "end",
        "\n" * 50,
        "\t\t\t",
        " \t \t\n \n",
        "a" * 300,
        "ab" * 150,
        "=" * 80,
        "<|im_start|>user\nhi<|im_end|>\n",
        "<|im_start|>",
        "<|endoftext|>",
        "<|eot_id|>",
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nHi<|eot_id|>",
        "<|im_start",
        "<<|im_start|>>",
        "<|im_start|><|im_end|>",
        " <|im_end|> ",
        "<repo_name>x<reponame>",
        "</s> <s> [INST] <unk>",
        random_text,
    ]


class Vocab:
    """llama.cpp's view of one GGUF vocabulary."""

    def __init__(self, llama_cpp, path):
        self.ll = llama_cpp
        self.llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.n = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.buf = ctypes.create_string_buffer(1 << 16)

    def tokenize(self, text, special, add_bos):
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def piece(self, token, special):
        # llama-cpp-python's detokenize uses a 32-byte buffer; long pieces need more.
        n = self.ll.llama_token_to_piece(self.vocab, token, self.buf, len(self.buf), 0, special)
        assert 0 <= n <= len(self.buf), (token, n)
        return self.buf.raw[:n]

    def detokenize(self, ids, special):
        return b"".join(self.piece(i, special) for i in ids)

    def summary(self):
        ll, v = self.ll, self.vocab
        normal = ll.LLAMA_TOKEN_ATTR_NORMAL
        attrs = [[i, int(ll.llama_vocab_get_attr(v, i))] for i in range(self.n)]
        block = 1024
        pieces = {}
        for special in (False, True):
            all_pieces = [self.piece(i, special) for i in range(self.n)]
            pieces["shown" if special else "hidden"] = [
                fnv1a64_pieces(all_pieces[s : s + block]) for s in range(0, self.n, block)
            ]
        none = ll.LLAMA_TOKEN_NULL
        maybe = lambda t: None if t == none else int(t)
        return {
            "n_tokens": self.n,
            "bos": maybe(ll.llama_vocab_bos(v)),
            "eos": maybe(ll.llama_vocab_eos(v)),
            "add_bos": bool(ll.llama_vocab_get_add_bos(v)),
            "add_eos": bool(ll.llama_vocab_get_add_eos(v)),
            "end_of_generation": [i for i in range(self.n) if ll.llama_vocab_is_eog(v, i)],
            "attrs_not_normal": [a for a in attrs if a[1] != normal],
            "piece_digest_block": block,
            "piece_digests": pieces,
        }

    def case(self, set_name, special, add_bos, text, ref=None, inline=True):
        ids = self.tokenize(text, special, add_bos)
        case = {"set": set_name, "special": special, "add_bos": add_bos}
        case.update(ref if ref is not None else {"text": text})
        if inline and len(ids) <= MAX_INLINE_IDS:
            case["ids"] = ids
        else:
            case["n_ids"] = len(ids)
            case["ids_fnv1a64"] = fnv1a64_ids(ids)
        # The pieces of the ids, rendered as the ids were parsed, against the text.
        detok = self.detokenize(ids, special)
        if detok == text.encode("utf-8"):
            case["detok_is_text"] = True
        elif detok == b" " + text.encode("utf-8"):
            # SentencePiece's space prefix (tokenizer.ggml.add_space_prefix).
            case["detok_is_text"] = False
            case["detok_is_space_and_text"] = True
        else:
            case["detok_is_text"] = False
            case["detok_hex"] = detok.hex()
        return case


def render_chat(llama_cpp, vocab, template, instruction):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    ll, v = llama_cpp, vocab.vocab
    bos = vocab.llm.detokenize([ll.llama_vocab_bos(v)], special=True).decode()
    eos = vocab.llm.detokenize([ll.llama_vocab_eos(v)], special=True).decode()
    formatter = Jinja2ChatFormatter(template=template, bos_token=bos, eos_token=eos)
    return formatter(messages=[{"role": "user", "content": instruction}]).prompt


def fetch_sdist_files(out_dir, vocab_files=VOCAB_FILES):
    """The vocabulary GGUFs (gzipped into out_dir) and the vendored llama.cpp commit, from
    llama-cpp-python's source distribution."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            # --no-binary for this package only: its build tools (cmake, scikit-build-core)
            # still come as wheels when pip prepares the source's metadata.
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
             "llama-cpp-python", f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", tmp],
            check=True,
        )
        (sdist,) = Path(tmp).glob("llama_cpp_python-*.tar.gz")
        commit = None
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                name = member.name.split("/", 1)[-1]
                if name == "CHANGELOG.md":
                    changelog = tar.extractfile(member).read().decode()
                    m = re.search(r"update llama\.cpp to ggml-org/llama\.cpp@([0-9a-f]+)", changelog)
                    commit = m.group(1) if m else None
                for label, file in vocab_files.items():
                    if name == f"vendor/llama.cpp/models/{file}":
                        data = tar.extractfile(member).read()
                        (out_dir / "vocabs").mkdir(parents=True, exist_ok=True)
                        write_gz(out_dir / "vocabs" / f"{file}.gz", data)
        return commit


def gguf_metadata(data):
    """A GGUF file's header: (version, tensor count, [(key, raw bytes of the key-value)]),
    and where the key-values end."""
    import struct

    magic, version, n_tensors, n_kv = struct.unpack_from("<4sIQQ", data, 0)
    assert magic == b"GGUF" and version == 3, (magic, version)
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    pos = 24

    def skip_value(pos, kind):
        if kind == 8:  # string
            (n,) = struct.unpack_from("<Q", data, pos)
            return pos + 8 + n
        if kind == 9:  # array
            item, count = struct.unpack_from("<IQ", data, pos)
            pos += 12
            if item in sizes:
                return pos + count * sizes[item]
            for _ in range(count):
                pos = skip_value(pos, item)
            return pos
        return pos + sizes[kind]

    kvs = []
    for _ in range(n_kv):
        start = pos
        (n,) = struct.unpack_from("<Q", data, pos)
        key = data[pos + 8 : pos + 8 + n].decode()
        (kind,) = struct.unpack_from("<I", data, pos + 8 + n)
        pos = skip_value(pos + 12 + n, kind)
        kvs.append((key, data[start:pos]))
    return version, n_tensors, kvs, pos


def gguf_string_kv(key, value):
    import struct

    k, v = key.encode(), value.encode()
    return struct.pack("<Q", len(k)) + k + struct.pack("<IQ", 8, len(v)) + v


def gguf_without_tensors(data, replace=None):
    """The metadata of a GGUF as a file with no tensors (what llama.cpp's vocab-only GGUFs
    are), string values of `replace` changed."""
    import struct

    version, _, kvs, _ = gguf_metadata(data)
    replace = replace or {}
    body = b"".join(gguf_string_kv(k, replace[k]) if k in replace else raw for k, raw in kvs)
    return struct.pack("<4sIQQ", b"GGUF", version, 0, len(kvs)) + body


def write_gz(path, data):
    # mtime=0 and no file name: the same input gives the same bytes.
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        gz.write(data)


UNICODE_TABLE = REPO / "engine" / "src" / "tokenizer" / "unicode_15_1.rs"


def write_unicode_table(path):
    """llama.cpp classifies code points with tables generated from Unicode 15.1; herd's
    pre-tokenizers use the same categories, from unicodedata2 15.1.0."""
    import unicodedata2

    assert unicodedata2.unidata_version == "15.1.0", unicodedata2.unidata_version

    def ranges(predicate):
        out, start = [], None
        for cp in range(0x110001):
            inside = cp < 0x110000 and predicate(unicodedata2.category(chr(cp)))
            if inside and start is None:
                start = cp
            elif not inside and start is not None:
                out.append((start, cp - 1))
                start = None
        return out

    def table(name, doc, rs):
        rows = "".join(f"    (0x{a:05X}, 0x{b:05X}),\n" for a, b in rs)
        return f"/// {doc}\npub(crate) const {name}: &[(u32, u32)] = &[\n{rows}];\n"

    text = (
        "//! Unicode 15.1 general categories, the version of llama.cpp's tables.\n"
        "//! Generated by `python3 scripts/make_tokenizer_fixture.py --unicode-table`\n"
        "//! (unicodedata2 15.1.0); do not edit.\n\n"
        + table("LETTERS", "General category L*, as inclusive code point ranges.", ranges(lambda c: c[0] == "L"))
        + "\n"
        + table("NUMBERS", "General category N*, as inclusive code point ranges.", ranges(lambda c: c[0] == "N"))
        + "\n"
        + table("MARKS", "General category M*, as inclusive code point ranges.", ranges(lambda c: c[0] == "M"))
        + "\n"
        + table("PUNCTUATION", "General category P*, as inclusive code point ranges.", ranges(lambda c: c[0] == "P"))
        + "\n"
        + table("SYMBOLS", "General category S*, as inclusive code point ranges.", ranges(lambda c: c[0] == "S"))
    )
    path.write_text(text)
    print(f"{path}: written", file=sys.stderr)


def main():
    cache = Path(os.environ.get("HERD_MODEL_CACHE", Path.home() / ".cache" / "herd" / "models"))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=cache / "SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--more-vocabularies", action="store_true",
                        help="write the fixtures of the vocabularies added after the first three")
    parser.add_argument("--gemma3", type=Path, default=cache / "gemma-3-270m-q4_k_m.gguf")
    parser.add_argument("--only", action="append", metavar="LABEL",
                        help="with --more-vocabularies, write only this vocabulary's fixture (repeatable)")
    parser.add_argument("--unicode-table", action="store_true",
                        help=f"only write {UNICODE_TABLE.relative_to(REPO)} (needs unicodedata2==15.1.0)")
    args = parser.parse_args()
    if args.unicode_table:
        write_unicode_table(UNICODE_TABLE)
        return

    import llama_cpp

    if llama_cpp.__version__ != LLAMA_CPP_PYTHON:
        sys.exit(f"llama-cpp-python {llama_cpp.__version__} found, {LLAMA_CPP_PYTHON} needed")
    if args.more_vocabularies and not args.gemma3.exists():
        sys.exit(f"{args.gemma3} is missing: run scripts/fetch-gemma3-270m.sh")
    if not args.more_vocabularies and not args.model.exists():
        sys.exit(f"{args.model} is missing: run scripts/fetch-default-model.sh")
    args.out.mkdir(parents=True, exist_ok=True)
    commit = fetch_sdist_files(args.out, MORE_VOCAB_FILES if args.more_vocabularies else VOCAB_FILES)

    eval_set = json.loads((REPO / "data" / "eval_set.json").read_text())
    judge_template = (REPO / "data" / "prompts" / "alpaca_eval_fn.txt").read_text()
    awkward = awkward_texts()
    generator = {
        "script": "scripts/make_tokenizer_fixture.py",
        "llama_cpp_python": llama_cpp.__version__,
        "llama_cpp_commit": commit,
    }

    def common_cases(vocab, label, outputs_inline):
        cases = []
        for i, ex in enumerate(eval_set):
            cases.append(vocab.case("instruction", False, False, ex["instruction"], {"index": i}))
        for i, ex in enumerate(eval_set):
            cases.append(vocab.case("output", False, False, ex["output"], {"index": i}, inline=outputs_inline))
        for text in awkward:
            for special in (False, True):
                cases.append(vocab.case("awkward", special, False, text))
        for text in awkward[:40:3]:
            cases.append(vocab.case("awkward", True, True, text))
        for start, end in PROBE_RANGES:
            for block in range(start, end, PROBE_BLOCK):
                ref = {"code_points": [block, block + PROBE_BLOCK]}
                cases.append(vocab.case("code_points", False, False, probe_text(block, block + PROBE_BLOCK), ref, inline=False))
        print(f"{label}: {len(cases)} cases", file=sys.stderr)
        return cases

    if args.more_vocabularies:
        write_more_vocabularies(llama_cpp, args, generator, eval_set, common_cases)
        return

    # SmolLM2: the default model.
    smollm = Vocab(llama_cpp, args.model)
    template = smollm.llm.metadata.get("tokenizer.chat_template")
    cases = common_cases(smollm, "smollm2", outputs_inline=True)
    for i, ex in enumerate(eval_set):
        prompt = render_chat(llama_cpp, smollm, template, ex["instruction"])
        cases.append(smollm.case("chat", True, False, prompt))
    write_fixture(args.out / "smollm2.json.gz", {
        "generator": generator,
        "gguf": args.model.name,
        "vocab": smollm.summary(),
        "probe_block": PROBE_BLOCK,
        "cases": cases,
    })

    # Llama 3's vocabulary: the judge's.
    with tempfile.TemporaryDirectory() as tmp:
        for label, file in VOCAB_FILES.items():
            path = Path(tmp) / file
            path.write_bytes(gzip.decompress((args.out / "vocabs" / f"{file}.gz").read_bytes()))
            vocab = Vocab(llama_cpp, path)
            cases = common_cases(vocab, label, outputs_inline=(label != "llama-bpe"))
            if label == "llama-bpe":
                for i in range(len(eval_set)):
                    prompt = judge_prompt(judge_template, eval_set, i)
                    cases.append(vocab.case("judge", True, False, prompt, {"index": i}, inline=False))
            write_fixture(args.out / f"{label}.json.gz", {
                "generator": generator,
                "gguf": f"vocabs/{file}.gz",
                "vocab": vocab.summary(),
                "probe_block": PROBE_BLOCK,
                "cases": cases,
            })


def write_more_vocabularies(llama_cpp, args, generator, eval_set, common_cases):
    """The fixtures of --more-vocabularies (see the module's doc)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sources = {}
        for label, file in MORE_VOCAB_FILES.items():
            (tmp / file).write_bytes(gzip.decompress((args.out / "vocabs" / f"{file}.gz").read_bytes()))
            sources[label] = (tmp / file, f"vocabs/{file}.gz", {})
        llama_bpe = gzip.decompress((args.out / "vocabs" / f"{VOCAB_FILES['llama-bpe']}.gz").read_bytes())
        for pre in PRE_OVERRIDES:
            path = tmp / f"llama-bpe-{pre}.gguf"
            path.write_bytes(gguf_without_tensors(llama_bpe, {"tokenizer.ggml.pre": pre}))
            sources[pre] = (path, f"vocabs/{VOCAB_FILES['llama-bpe']}.gz", {"tokenizer.ggml.pre": pre})
        gemma = gguf_without_tensors(args.gemma3.read_bytes())
        write_gz(args.out / "vocabs" / f"{GEMMA3_VOCAB}.gz", gemma)
        (tmp / GEMMA3_VOCAB).write_bytes(gemma)
        sources["gemma3"] = (tmp / GEMMA3_VOCAB, f"vocabs/{GEMMA3_VOCAB}.gz", {})

        for label, (path, gguf, overrides) in sources.items():
            if args.only and label not in args.only:
                continue
            vocab = Vocab(llama_cpp, path)
            cases = common_cases(vocab, label, outputs_inline=False)
            if label == "gemma3":
                # Gemma's turns (its chat template's shape), special tokens parsed.
                for i, ex in enumerate(eval_set):
                    prompt = f"<start_of_turn>user\n{ex['instruction']}<end_of_turn>\n<start_of_turn>model\n"
                    cases.append(vocab.case("chat", True, True, prompt))
            fixture = {
                "generator": generator,
                "gguf": gguf,
                "vocab": vocab.summary(),
                "probe_block": PROBE_BLOCK,
                "cases": cases,
            }
            if overrides:
                fixture["metadata_overrides"] = overrides
            if label == "gemma3":
                fixture["source_gguf"] = args.gemma3.name
            write_fixture(args.out / f"{label}.json.gz", fixture)


def write_fixture(path, fixture):
    data = json.dumps(fixture, ensure_ascii=False, separators=(",", ":")).encode()
    write_gz(path, data)
    print(f"{path}: {len(fixture['cases'])} cases, {len(data)} bytes, {path.stat().st_size} gzipped", file=sys.stderr)


if __name__ == "__main__":
    main()
