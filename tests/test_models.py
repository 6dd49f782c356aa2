"""Model registry, safe paths, device/dtype choice, loading (embedded, local, LoRA adapters, runs) and scoring."""

from __future__ import annotations

import json
import os
import shutil
import threading
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from ctllm.errors import UserError
from ctllm.models import embedded
from ctllm.models.loading import LoadedModel, clear_model_cache, get_model, load_model, pick_device, pick_dtype
from ctllm.models.registry import PRESETS, list_models, resolve_spec, run_names
from ctllm.models.scoring import completion_logps, completion_token_ids, implicit_reward
from ctllm.models.templates import FALLBACK_TEMPLATE, apply_chat_template
from ctllm.paths import safe_resolve
from ctllm.settings import Settings

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def roomy(settings: Settings, tiny_model_dir: Path, tmp_path: Path) -> Settings:
    """Settings whose allowed roots also hold the test model cache (where the tiny model lives)."""
    return settings.with_(allowed_roots=(settings.data_dir, tmp_path, tiny_model_dir.parent))


@pytest.fixture
def embedded_settings(settings: Settings, embedded_model_dir: Path) -> Settings:
    """Settings whose models dir holds the already converted embedded model (linked, not converted again)."""
    link = embedded.embedded_folder(settings.models_dir)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(embedded_model_dir, target_is_directory=True)
    return settings


def make_adapter(base_dir: Path, out_dir: Path, seed: int = 0) -> Path:
    """A LoRA adapter on ``base_dir`` with random (non-zero) weights, so it changes the model's outputs."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(out_dir)
    return out_dir


def set_adapter_base(adapter_dir: Path, base: str) -> None:
    path = adapter_dir / "adapter_config.json"
    config = json.loads(path.read_text())
    config["base_model_name_or_path"] = base
    path.write_text(json.dumps(config))


def make_run(settings: Settings, name: str, final_from: Path, model: str | None, state: str = "finished") -> Path:
    run_dir = settings.runs_dir / name
    shutil.copytree(final_from, run_dir / "final")
    if model is not None:
        (run_dir / "config.yaml").write_text(yaml.safe_dump({"model": model, "beta": 0.1}))
    (run_dir / "status.json").write_text(json.dumps({"state": state}))
    return run_dir


def logits_of(loaded, text: str = "Hello there") -> torch.Tensor:
    ids = loaded.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        return loaded.model(input_ids=ids).logits[0]


# --- safe paths ---------------------------------------------------------------------------------------------------


def test_safe_resolve_accepts_paths_inside_the_roots(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "models" / "a").mkdir(parents=True)
    assert safe_resolve(root / "models" / "a", [root]) == (root / "models" / "a").resolve()
    assert safe_resolve("models/a", [root], base=root) == (root / "models" / "a").resolve()
    assert safe_resolve("models/a/../a", [root], base=root) == (root / "models" / "a").resolve()
    assert safe_resolve(root / "not-yet", [root]) == (root / "not-yet").resolve()  # existence is the caller's job
    inner_link = root / "link-in"
    inner_link.symlink_to(root / "models")
    assert safe_resolve(inner_link, [root]) == (root / "models").resolve()


def test_safe_resolve_refuses_escapes(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    for path in ("../outside", root / ".." / "outside", outside, "/etc/passwd", root / "escape", root / "escape" / "x"):
        with pytest.raises(UserError, match="outside the allowed folders"):
            safe_resolve(path, [root], base=root)
    with pytest.raises(UserError, match="NUL"):
        safe_resolve("a\x00b", [root], base=root)
    with pytest.raises(UserError, match="empty"):
        safe_resolve("  ", [root])
    # A root that is a prefix of another folder's name does not admit that folder.
    (tmp_path / "root-sibling").mkdir()
    with pytest.raises(UserError):
        safe_resolve(tmp_path / "root-sibling", [root])


# --- registry -----------------------------------------------------------------------------------------------------


def test_embedded_spec_points_at_the_models_dir_and_warns_about_chinese(settings: Settings) -> None:
    spec = resolve_spec("embedded", settings)
    assert spec.kind == "embedded" and not spec.trust_remote_code and spec.base is None
    assert Path(spec.path) == settings.models_dir / embedded.FOLDER_NAME
    assert "Chinese" in spec.note and "ct-llm-sft" in spec.note
    assert resolve_spec(" Embedded ", settings).kind == "embedded"


def test_presets_resolve_to_hub_ids_with_their_fallback_template(settings: Settings, monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    online = settings.with_(offline=False)
    trusted = online.with_(trust_remote_code=True)  # they need remote code: the operator's CTLLM_TRUST_REMOTE_CODE=1
    sft, dpo = resolve_spec("ct-llm-sft", trusted), resolve_spec("ct-llm-sft-dpo", trusted)
    assert (sft.kind, sft.path, dpo.path) == ("hub", "m-a-p/CT-LLM-SFT", "m-a-p/CT-LLM-SFT-DPO")
    assert sft.trust_remote_code and dpo.trust_remote_code
    assert sft.chat_template == FALLBACK_TEMPLATE and not sft.force_template
    other = resolve_spec("someone/some-model", online)
    assert other.kind == "hub" and not other.trust_remote_code and other.chat_template is None
    assert resolve_spec("someone/some-model", online.with_(trust_remote_code=True)).trust_remote_code


@pytest.mark.parametrize("how", ["env", "settings"])
def test_hub_ids_are_refused_offline_with_a_way_out(settings: Settings, monkeypatch, how: str) -> None:
    if how == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        offline = settings.with_(offline=False)
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        offline = settings.with_(offline=True)
    for spec in ("nobody-here/no-such-model-xyz", "ct-llm-sft-dpo"):
        with pytest.raises(UserError, match="HF_HUB_OFFLINE") as error:
            resolve_spec(spec, offline)
        assert "offline" in str(error.value) and "not in the local hub cache" in str(error.value)
    # Listing still offers the presets; only choosing one explains the problem.
    assert [s.ref for s in list_models(offline)][:3] == list(PRESETS)


def test_local_model_folder(roomy: Settings, tiny_model_dir: Path) -> None:
    spec = resolve_spec(str(tiny_model_dir), roomy)
    assert (spec.kind, Path(spec.path), spec.base, spec.trust_remote_code) == ("local", tiny_model_dir, None, False)
    assert spec.label == tiny_model_dir.name


def test_local_folder_errors_name_the_path(roomy: Settings, tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(UserError, match=str(tmp_path / "nothing-here")):
        resolve_spec(str(tmp_path / "nothing-here"), roomy)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=rf"{empty}.*neither config.json nor adapter_config.json"):
        resolve_spec(str(empty), roomy)
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    shutil.copy(tiny_model_dir / "config.json", no_weights)
    with pytest.raises(UserError, match=rf"{no_weights} has config.json but no weights"):
        resolve_spec(str(no_weights), roomy)
    with pytest.raises(UserError, match="unknown model 'no-such-thing'"):
        resolve_spec("no-such-thing", roomy)


def test_local_folders_outside_the_allowed_roots_are_refused(settings: Settings, tiny_model_dir: Path) -> None:
    with pytest.raises(UserError, match="outside the allowed folders"):
        resolve_spec(str(tiny_model_dir), settings)  # the test cache is not an allowed root here
    link = settings.data_dir / "linked-model"
    link.symlink_to(tiny_model_dir)
    with pytest.raises(UserError, match="outside the allowed folders"):
        resolve_spec(str(link), settings)
    with pytest.raises(UserError, match="outside the allowed folders"):
        resolve_spec("../../../../../../etc", settings)


def test_adapter_folder_resolves_its_base(roomy: Settings, tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter")
    set_adapter_base(adapter, str(tiny_model_dir))
    spec = resolve_spec(str(adapter), roomy)
    assert spec.kind == "adapter" and spec.is_adapter and spec.base == str(tiny_model_dir)
    assert "LoRA" in spec.label


def test_adapter_with_missing_base_is_a_clear_error(roomy: Settings, tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter")
    set_adapter_base(adapter, str(tmp_path / "gone-base"))
    with pytest.raises(UserError, match=r"needs a base model that is missing.*gone-base.*--base"):
        resolve_spec(str(adapter), roomy)
    # An explicit base fixes it.
    assert resolve_spec(str(adapter), roomy, base=str(tiny_model_dir)).base == str(tiny_model_dir)
    # An adapter trained on the embedded model on another machine finds ours.
    set_adapter_base(adapter, f"/elsewhere/{embedded.FOLDER_NAME}")
    assert resolve_spec(str(adapter), roomy).base == "embedded"


def test_runs_resolve_by_name_and_latest(roomy: Settings, tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter")
    set_adapter_base(adapter, "/trained/elsewhere/base")  # not loadable here: config.yaml's model is used
    lora_run = make_run(roomy, "lora-run", adapter, model=str(tiny_model_dir))
    full_run = make_run(roomy, "full-run", tiny_model_dir, model="embedded")
    running = make_run(roomy, "still-running", tiny_model_dir, model=None, state="running")
    for age, run in ((300, lora_run), (200, full_run), (0, running)):
        stamp = 1_700_000_000 - age
        os.utime(run / "final", (stamp, stamp))

    assert run_names(roomy) == ["full-run", "lora-run"]  # newest first, unfinished ones left out
    lora = resolve_spec("run:lora-run", roomy)
    assert (lora.kind, lora.base, Path(lora.path)) == ("run", str(tiny_model_dir), lora_run / "final")
    latest = resolve_spec("latest-run", roomy)
    assert (latest.kind, latest.base, Path(latest.path)) == ("run", None, full_run / "final")
    assert "cannot write Chinese" in latest.note  # trained from the embedded model: its note carries over
    listed = [spec.ref for spec in list_models(roomy)]
    assert listed == [*PRESETS, "run:full-run", "run:lora-run"]

    with pytest.raises(UserError, match=r"no run named 'nope'.*full-run, lora-run"):
        resolve_spec("run:nope", roomy)
    with pytest.raises(UserError, match="not valid"):
        resolve_spec("run:../lora-run", roomy)
    (roomy.runs_dir / "empty-run").mkdir()
    with pytest.raises(UserError, match="has no trained model yet"):
        resolve_spec("run:empty-run", roomy)


def test_latest_run_without_runs(settings: Settings) -> None:
    with pytest.raises(UserError, match="no finished training run"):
        resolve_spec("latest-run", settings)


def test_explicit_chat_template_replaces_the_tokenizers(roomy: Settings, tiny_model_dir: Path, tmp_path) -> None:
    template_file = tmp_path / "plain.jinja"
    template_file.write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
    spec = resolve_spec(str(tiny_model_dir), roomy, chat_template=str(template_file))
    assert spec.force_template
    loaded = load_model(spec, roomy)
    text = loaded.tokenizer.decode(apply_chat_template(loaded.tokenizer, QUESTION, add_generation_prompt=False))
    assert text == "user: What is the capital of France?\n"
    with pytest.raises(UserError, match="neither a known name"):
        resolve_spec(str(tiny_model_dir), roomy, chat_template="no-such-template")


# --- device and dtype ---------------------------------------------------------------------------------------------


def test_pick_device() -> None:
    assert pick_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert pick_device("cuda:0") == torch.device("cuda:0")
    else:
        with pytest.raises(UserError, match="CUDA is not available"):
            pick_device("cuda")
    with pytest.raises(UserError, match="not one of"):
        pick_device("tpu")


def test_pick_dtype_never_bf16_on_cpu_unless_asked() -> None:
    cpu = torch.device("cpu")
    assert pick_dtype("auto", cpu) == torch.float32
    assert pick_dtype("float32", cpu) == torch.float32
    with pytest.warns(UserWarning, match="CPU"):
        assert pick_dtype("bf16", cpu) == torch.bfloat16
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pick_dtype("auto", cpu)
    if torch.cuda.is_available():
        assert pick_dtype("auto", torch.device("cuda")) in (torch.bfloat16, torch.float16)
    with pytest.raises(UserError, match="not one of"):
        pick_dtype("int8", cpu)


# --- loading ------------------------------------------------------------------------------------------------------


def test_embedded_loads_from_its_cache_into_the_shared_cache(embedded_settings: Settings) -> None:
    clear_model_cache()
    first = get_model("embedded", embedded_settings)
    again = get_model("embedded", embedded_settings)
    assert again.model is first.model and again.tokenizer is first.tokenizer
    assert first.dtype == torch.float32 and first.device == torch.device("cpu")
    assert not first.model.training and not any(p.requires_grad for p in first.model.parameters())
    assert not getattr(first.model, "is_quantized", False)  # the converted folder is plain safetensors
    assert first.tokenizer.eos_token_id in first.stop_token_ids
    config = json.loads((embedded.embedded_folder(embedded_settings.models_dir) / "config.json").read_text())
    assert "quantization_config" not in config
    clear_model_cache()


def test_get_model_loads_once_under_concurrent_requests(roomy: Settings, tiny_model_dir: Path) -> None:
    clear_model_cache()
    results = []
    threads = [threading.Thread(target=lambda: results.append(get_model(str(tiny_model_dir), roomy))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len({id(r.model) for r in results}) == 1
    fresh = load_model(str(tiny_model_dir), roomy)  # load_model never hands out the cached copy
    assert fresh.model is not results[0].model
    clear_model_cache()


def test_wrap_objects_loaded_elsewhere(roomy: Settings, tiny_model_dir: Path) -> None:
    loaded = load_model(str(tiny_model_dir), roomy)
    wrapped = LoadedModel.wrap(loaded.model, loaded.tokenizer)
    assert (wrapped.device, wrapped.dtype, wrapped.stop_token_ids) == (
        loaded.device,
        loaded.dtype,
        loaded.stop_token_ids,
    )
    assert completion_logps(wrapped, QUESTION, "Paris.") == completion_logps(loaded, QUESTION, "Paris.")


def test_lora_adapter_loads_on_a_fresh_base(roomy: Settings, tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter")
    set_adapter_base(adapter, str(tiny_model_dir))
    base = load_model(str(tiny_model_dir), roomy)
    lora = load_model(str(adapter), roomy)
    assert type(lora.model).__name__ == "PeftModel" and lora.spec.kind == "adapter"
    with_adapter = logits_of(lora)
    assert not torch.allclose(with_adapter, logits_of(base), atol=1e-4)  # the adapter changes the model
    with lora.model.disable_adapter():
        assert torch.allclose(logits_of(lora), logits_of(base), atol=1e-5)  # and off, it is the base again
    trainable = load_model(str(adapter), roomy, trainable=True)
    names = [n for n, p in trainable.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)


def test_adapter_run_loads_with_the_base_from_config_yaml(roomy: Settings, tiny_model_dir: Path, tmp_path) -> None:
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", seed=1)
    set_adapter_base(adapter, "/trained/elsewhere/base")
    make_run(roomy, "r1", adapter, model=str(tiny_model_dir))
    loaded = load_model("run:r1", roomy)
    assert type(loaded.model).__name__ == "PeftModel"
    assert loaded.tokenizer.chat_template  # the base's tokenizer, since the adapter folder has none


# --- scoring ------------------------------------------------------------------------------------------------------


def test_completion_token_ids_end_with_one_eos(roomy: Settings, tiny_model_dir: Path) -> None:
    tokenizer = load_model(str(tiny_model_dir), roomy).tokenizer
    prompt, answer = completion_token_ids(tokenizer, QUESTION, "Paris.")
    assert prompt == apply_chat_template(tokenizer, QUESTION)
    assert answer[-1] == tokenizer.eos_token_id and answer.count(tokenizer.eos_token_id) == 1
    assert tokenizer.decode(answer) == "Paris.<|im_end|>"
    assert prompt[0] == tokenizer.bos_token_id and prompt[1] != tokenizer.bos_token_id  # no doubled BOS


def test_completion_logps_equals_a_token_by_token_computation(roomy: Settings, tiny_model_dir: Path) -> None:
    loaded = load_model(str(tiny_model_dir), roomy)
    completion = "The capital of France is Paris."
    prompt, answer = completion_token_ids(loaded.tokenizer, QUESTION, completion)
    by_hand = 0.0
    with torch.no_grad():
        for i, token in enumerate(answer):
            prefix = torch.tensor([prompt + answer[:i]])
            next_logits = loaded.model(input_ids=prefix).logits[0, -1].double()
            by_hand += float(torch.log_softmax(next_logits, dim=-1)[token])
    assert completion_logps(loaded, QUESTION, completion) == pytest.approx(by_hand, abs=1e-3)
    assert implicit_reward(loaded, loaded, QUESTION, completion, beta=0.5) == 0.0


def test_fallback_template_is_used_when_the_tokenizer_has_none(roomy: Settings, tiny_model_dir: Path) -> None:
    tokenizer = load_model(str(tiny_model_dir), roomy).tokenizer
    tokenizer.chat_template = None
    text = tokenizer.decode(apply_chat_template(tokenizer, QUESTION))
    assert text == "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
