"""Toy models of every family: build, save, reload; inputs; the composed forward; the layout and
placeholder count each model's own processor builds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harken.models.families import AUDIO_TOKEN, FAMILIES as REGISTERED, get_family
from harken.models.loading import load_audio_lm
from harken.models.toy import build_tiny

FAMILIES = list(REGISTERED)


def _clips(seconds=(1.0, 2.7), seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(16000 * s))).astype(np.float32) for s in seconds]


def _forward_kwargs(lm, batch):
    """model(...)'s inputs for a prompt batch (the valid-frame mask under the family's name, if it takes one)."""
    kw = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "input_features": batch.input_features}
    if lm.family.feature_mask_arg:
        kw[lm.family.feature_mask_arg] = batch.feature_mask
    return kw


@pytest.mark.parametrize("family", FAMILIES)
def test_save_reload_identical_logits(family, tiny_dirs):
    built = build_tiny(family, seed=0)  # same seed as the saved one
    loaded = load_audio_lm(str(tiny_dirs[family]))
    assert loaded.family is get_family(family)
    batch = loaded.encode_prompts(["Which is louder?", "How many beeps are there?"], _clips())
    kw = _forward_kwargs(loaded, batch)
    with torch.no_grad():
        a = built.model(**kw).logits
        b = loaded.model(**kw).logits
    assert torch.equal(a, b)


@pytest.mark.parametrize("family", FAMILIES)
def test_audio_positions_match_encoder_output(family, tiny_dirs):
    lm = load_audio_lm(str(tiny_dirs[family]))
    batch = lm.encode_prompts(["a", "b, a longer question"], _clips((0.6, 3.3)))
    n_placeholders = (batch.input_ids == lm.audio_token_id).sum(-1).tolist()
    assert n_placeholders == batch.audio_token_counts
    if lm.family.whole_window:  # the whole window is heard: every clip gets the same count
        assert n_placeholders[0] == n_placeholders[1] == lm.family.audio_token_count(batch.input_features.shape[-1])
    else:
        assert n_placeholders[0] < n_placeholders[1]  # shorter clip, fewer tokens
    with torch.no_grad():
        enc = lm.encode_audio(batch)
    assert enc.shape[0] == sum(n_placeholders)
    # Left padding: the shorter prompt is padded on the left, and every prompt ends the same way.
    assert batch.attention_mask[0, 0] == 0 and batch.attention_mask[:, -1].all()
    tail = lm.tokenizer.decode(batch.input_ids[0, -12:])
    assert tail.endswith(lm.family.chat_parts(lm.family)[1])  # "<|im_end|>\n<|im_start|>assistant\n", "[/INST]"


@pytest.mark.parametrize("family", FAMILIES)
def test_composed_forward_equals_model_forward(family, tiny_dirs):
    """The pieces harken composes (encoder, projector, language model, head) equal model(...)."""
    from harken.rl.rollout import prompt_positions

    lm = load_audio_lm(str(tiny_dirs[family]))
    batch = lm.encode_prompts(["What is the sound?", "Is the second tone higher or lower than the first one?"], _clips())
    with torch.no_grad():
        ref = lm.model(**_forward_kwargs(lm, batch)).logits
        hidden, _ = lm.text_forward(lm.embed_prompts(batch), batch.attention_mask, prompt_positions(batch.attention_mask))
        mine = lm.lm_head(hidden)
    valid = batch.attention_mask.bool()
    assert torch.allclose(mine[valid], ref[valid], atol=1e-5)


# Voxtral's processor builds prompts from a conversation only (test_voxtral_prompts_are_its_processors).
@pytest.mark.parametrize("family", [f for f in FAMILIES if get_family(f).processor_class_name and f != "voxtral"])
def test_saved_folder_loads_with_plain_transformers(family, tiny_dirs):
    from transformers import AutoProcessor

    path = str(tiny_dirs[family])
    model = get_family(family).model_class.from_pretrained(path)
    proc = AutoProcessor.from_pretrained(path)
    assert type(proc).__name__ == get_family(family).processor_class_name
    lm = load_audio_lm(path)
    clip = _clips((2.0,))[0]
    chat = lm.family.chat_text("Which one?")
    inputs = proc(text=chat, audio=[clip], return_tensors="pt")
    ours = lm.encode_prompts(["Which one?"], [clip])
    # transformers' own processor expands the placeholder to the same number of audio tokens.
    assert int((inputs["input_ids"] == lm.audio_token_id).sum()) == ours.audio_token_counts[0]
    assert torch.equal(inputs["input_ids"], ours.input_ids)
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert inputs["input_ids"].shape[1] < out.shape[1] <= inputs["input_ids"].shape[1] + 3


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "voxtral"])  # Voxtral: tests/models/test_voxtral.py
def test_prompt_ids_equal_tokenizing_the_whole_prompt(family, tiny_dirs):
    """Special tokens by id and the text between them tokenized == the tokenizer on the whole string
    (what Qwen's processors and chat templates do), the placeholder repeated."""
    lm = load_audio_lm(str(tiny_dirs[family]))
    for text in ("Which is louder?", " leading space\nand a newline", "<answer>B</answer> then <think>"):
        whole = lm.family.chat_text(text).replace(lm.family.audio_token, lm.family.audio_token * 7, 1)
        assert lm.family.prompt_ids(lm.tokenizer, text, 7) == lm.tokenizer(whole, add_special_tokens=False)["input_ids"]


def test_tokenizer_and_chat_layout(tiny_dirs):
    lm = load_audio_lm(str(tiny_dirs["qwen2-audio"]))
    text = lm.family.chat_text("Q?")
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert f"Audio 1: <|audio_bos|>{AUDIO_TOKEN}<|audio_eos|>\nQ?<|im_end|>" in text
    ids = lm.tokenizer("<answer>x</answer><|im_end|>", add_special_tokens=False)["input_ids"]
    assert lm.tokenizer.decode(ids) == "<answer>x</answer><|im_end|>"
    assert lm.eos_ids and lm.tokenizer.convert_tokens_to_ids("<|im_end|>") in lm.eos_ids


def test_audio_flamingo_3_layout(tiny_dirs):
    """AF3's processor chat template: default system turn, `<sound>` right before the user text."""
    lm = load_audio_lm(str(tiny_dirs["audio-flamingo-3"]))
    assert lm.family.chat_text("Q?") == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<sound>Q?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert lm.tokenizer.convert_ids_to_tokens(lm.audio_token_id) == "<sound>"
    assert lm.model.config.audio_token_id == lm.audio_token_id
    assert [lm.tokenizer.convert_ids_to_tokens(i) for i in lm.eos_ids] == ["<|endoftext|>", "<|im_end|>"]


@pytest.mark.parametrize("family", ["qwen2.5-omni", "audio-flamingo-3", "qwen3-omni", "voxtral"])
def test_model_tiny_cli(tmp_path, capsys, family):
    from harken.cli import main

    assert main(["model", "tiny", "--family", family, "--out", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "model.safetensors").exists()
    assert family in capsys.readouterr().out
    lm = load_audio_lm(str(tmp_path / "m"))
    assert lm.family.name == family


def test_unknown_family_and_dtype():
    from harken.models.loading import resolve_dtype

    with pytest.raises(ValueError, match="supported"):
        get_family("whisper")
    with pytest.raises(ValueError, match="float32"):
        resolve_dtype("float8", "cpu")


def test_tiny_path_rebuilds_the_training_start(tiny_dirs):
    """`tiny:FAMILY` (what toy training runs start from) loads the same weights as a seed-0 build."""
    a = load_audio_lm("tiny:qwen2-audio")
    b = load_audio_lm(str(tiny_dirs["qwen2-audio"]))  # built with seed 0
    for (na, pa), (nb, pb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert na == nb and torch.equal(pa, pb), na


def test_joined_prompts_equal_encoding_them_together(tiny_dirs):
    """Rows picked from two batches of different widths == those prompts encoded as one batch."""
    lm = load_audio_lm(str(tiny_dirs["qwen2-audio"]))
    texts = ["a", "How many beeps are there in this clip?", "Which is louder, the first or the second?"]
    clips = _clips((0.6, 3.3, 1.9))
    first = lm.encode_prompts(texts[:2], clips[:2])
    second = lm.encode_prompts(texts[2:], clips[2:])
    assert first.input_ids.shape[1] != second.input_ids.shape[1]
    joined = type(first).join([(second, 0), (first, 0)], lm.pad_id)  # drops the longest prompt
    direct = lm.encode_prompts([texts[2], texts[0]], [clips[2], clips[0]])
    for name in ("input_ids", "attention_mask", "input_features", "feature_mask"):
        assert torch.equal(getattr(joined, name), getattr(direct, name)), name
    assert joined.audio_token_counts == direct.audio_token_counts


def test_qwen3_omni_routes_each_token_to_top_k_of_its_experts(tiny_dirs):
    """The shared-prefix path runs the MoE layers with the configured expert count and top-k: every
    prompt and completion token goes to num_experts_per_tok of num_experts experts, with the
    weights the model's own forward gives it."""
    from harken.rl.rollout import SamplingParams, generate

    lm = load_audio_lm(str(tiny_dirs["qwen3-omni"]))
    text = lm.model.config.text_config
    assert (text.num_experts, text.num_experts_per_tok, text.output_router_logits) == (4, 2, False)
    picks = []
    routers = [m for n, m in lm.model.named_modules() if n.endswith("mlp.gate")]
    assert len(routers) == text.num_hidden_layers
    hooks = [r.register_forward_hook(lambda m, i, out: picks.append(out[2])) for r in routers]
    batch = lm.encode_prompts(["Which is louder?", "How many beeps?"], _clips())
    generate(lm, batch, 3, SamplingParams(max_new_tokens=4, greedy=True))
    for h in hooks:
        h.remove()
    assert picks and all(p.shape[-1] == 2 and int(p.max()) < 4 for p in picks)
    assert len(torch.cat([p.flatten() for p in picks]).unique()) > 2  # routing really varies


def test_router_aux_loss_config_is_refused(tmp_path):
    from harken.models.loading import save_audio_lm

    lm = build_tiny("qwen3-omni", seed=0)
    lm.model.config.text_config.output_router_logits = True
    save_audio_lm(lm, tmp_path)
    with pytest.raises(ValueError, match="load-balancing loss"):
        load_audio_lm(str(tmp_path))


@pytest.mark.parametrize("preset,family", [("audio-flamingo-3", "audio-flamingo-3"), ("qwen3-omni", "qwen3-omni"),
                                           ("voxtral", "voxtral")])
def test_family_presets_name_their_family(preset, family):
    from harken.config import load_config
    from harken.schema import GRPOConfig

    cfg = load_config(GRPOConfig, preset)
    assert cfg.model.path == {"audio-flamingo-3": "nvidia/audio-flamingo-3-hf",
                              "qwen3-omni": "Qwen/Qwen3-Omni-30B-A3B-Instruct",
                              "voxtral": "mistralai/Voxtral-Mini-3B-2507"}[family]
    assert (cfg.rollout.group_size, cfg.algo.kl_coef, cfg.model.sharding) == (8, 0.04, "fsdp")
