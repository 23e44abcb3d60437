"""The frozen LLM backbone: offline loading, GGUF conversion + cache, truncation, prefix KV cache.

References are independent of linksim's loading code: gguf's own numpy dequantisation with
llama.cpp's Q/K permutation, transformers' full-depth model, hashlib over the file, and the
weights of a tiny model written to a GGUF file by the ``gguf`` writer.
"""
import hashlib
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from linksim.errors import LinksimError  # noqa: E402
from linksim.llm import BackboneSpec, expand_cache, load_backbone, tiny_backbone  # noqa: E402
from linksim.llm import backbone as bbmod  # noqa: E402
from linksim.llm import files as fmod  # noqa: E402

gguf = pytest.importorskip("gguf")


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def _permute(w, n_head):
    """llama.cpp's convert_hf_to_gguf permutation of q/k rows (HF -> GGUF)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.fixture(scope="module")
def default_bb():
    """The default backbone (the first run ever dequantises the GGUF once, ~20 s; then < 1 s)."""
    return load_backbone(BackboneSpec())


def _cache_dir():
    return bbmod.cache_root() / "backbones" / _sha256(bbmod.smollm2_gguf())[:16]


def test_default_backbone_offline_truncated_frozen(default_bb):
    from transformers import LlamaModel
    bb = default_bb
    assert isinstance(bb.model, LlamaModel) and not hasattr(bb.model, "lm_head")
    assert bb.num_layers == 6 and len(bb.model.layers) == 6 and bb.width == 576
    assert bb.config.hidden_size == 576 and bb.spec == BackboneSpec()
    assert all(not p.requires_grad for p in bb.parameters())
    assert bb.fingerprint == _sha256(bbmod.smollm2_gguf())[:16]
    assert len(bb.tokenizer) == 49152 and bb.model.embed_tokens.weight.shape == (49152, 576)
    files = {p.name for p in _cache_dir().iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= files


def test_weights_equal_gguf_dequantisation(default_bb):
    """Cached weights == gguf's numpy dequantisation (Q8_0 embedding, Q4_1 matrices, F32 norms)."""
    reader = gguf.GGUFReader(str(bbmod.smollm2_gguf()))
    t = {x.name: x for x in reader.tensors}

    def deq(name, rows=None):
        return gguf.quants.dequantize(t[name].data[:rows], t[name].tensor_type)

    sd = {k: v.numpy() for k, v in default_bb.model.state_dict().items()}
    np.testing.assert_array_equal(sd["embed_tokens.weight"][:2000], deq("token_embd.weight", 2000))
    np.testing.assert_array_equal(sd["norm.weight"], deq("output_norm.weight"))
    for i in (0, 5):
        np.testing.assert_array_equal(sd[f"layers.{i}.mlp.down_proj.weight"], deq(f"blk.{i}.ffn_down.weight"))
        np.testing.assert_array_equal(sd[f"layers.{i}.self_attn.v_proj.weight"], deq(f"blk.{i}.attn_v.weight"))
        np.testing.assert_array_equal(sd[f"layers.{i}.input_layernorm.weight"], deq(f"blk.{i}.attn_norm.weight"))
        np.testing.assert_array_equal(_permute(sd[f"layers.{i}.self_attn.q_proj.weight"], 9),
                                      deq(f"blk.{i}.attn_q.weight"))
        np.testing.assert_array_equal(_permute(sd[f"layers.{i}.self_attn.k_proj.weight"], 3),
                                      deq(f"blk.{i}.attn_k.weight"))


def test_truncated_equals_first_layers_of_full_model(default_bb):
    """Backbone output == final norm applied to hidden state 6 of transformers' full 30-layer LM."""
    from transformers import AutoModelForCausalLM
    full = AutoModelForCausalLM.from_pretrained(str(_cache_dir()), dtype=torch.float32, local_files_only=True)
    assert full.config.num_hidden_layers == 30
    ids = default_bb.tokenize("[channel prediction] predict the future channel state information")
    with torch.no_grad():
        ref = full(input_ids=ids[None], output_hidden_states=True)
        ref6 = full.model.norm(ref.hidden_states[6])
        out = default_bb(default_bb.embed(ids)[None])
    torch.testing.assert_close(out, ref6, atol=1e-4, rtol=1e-4)
    assert (out - full.model.norm(ref.hidden_states[7])).abs().max() > 1e-2     # depth matters


def test_second_load_reads_cache_without_hashing_or_converting(default_bb, monkeypatch):
    def fail(*a, **k):
        raise AssertionError("must not convert or re-hash")
    monkeypatch.setattr(fmod, "_convert_gguf", fail)
    monkeypatch.setattr(fmod, "open", fail, raising=False)      # file_sha256 reads the file via open
    bb2 = load_backbone(BackboneSpec(layers=2))
    assert len(bb2.model.layers) == 2 and bb2.fingerprint == default_bb.fingerprint
    ref = default_bb.model.state_dict()
    for k, v in bb2.model.state_dict().items():
        assert torch.equal(v, ref[k]), k


def test_random_init_same_shapes_different_weights(default_bb):
    rnd = load_backbone(BackboneSpec(random_init=True))
    assert rnd.fingerprint.startswith("random-") and rnd.fingerprint != default_bb.fingerprint
    a, b = default_bb.model.state_dict(), rnd.model.state_dict()
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    w_pre, w_rnd = a["layers.0.self_attn.q_proj.weight"], b["layers.0.self_attn.q_proj.weight"]
    assert not torch.allclose(w_pre, w_rnd)
    assert abs(w_rnd.std().item() - rnd.config.initializer_range) < 0.002     # fresh N(0, 0.02) init
    assert all(not p.requires_grad for p in rnd.parameters())


# ------------------------------------------------------------------------- GGUF path, offline, tiny
def _bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def _write_tiny_gguf(path, model):
    """Write a LlamaModel's weights (F32) and a tiny byte-level BPE vocabulary as llama.cpp would."""
    cfg = model.config
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(256)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + _bytes_to_unicode() + ["Ġt", "he"]
    tokens += [f"<extra{i}>" for i in range(cfg.vocab_size - len(tokens))]
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    w.add_token_merges(["Ġ t", "h e"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["norm.weight"])
    names = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
             "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for i in range(cfg.num_hidden_layers):
        for hf, gg in names.items():
            a = sd[f"layers.{i}.{hf}.weight"]
            if gg in ("attn_q", "attn_k"):
                a = _permute(a, cfg.num_attention_heads if gg == "attn_q" else cfg.num_key_value_heads)
            w.add_tensor(f"blk.{i}.{gg}.weight", np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_file_converts_once_then_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LINKSIM_CACHE", str(tmp_path / "cache"))
    from transformers import LlamaConfig, LlamaModel
    torch.manual_seed(3)
    src = LlamaModel(LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                 num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0))
    path = tmp_path / "tiny.gguf"
    _write_tiny_gguf(path, src)
    bb = load_backbone(BackboneSpec(source=str(path), layers=2))
    digest = _sha256(path)
    assert bb.fingerprint == digest[:16] and len(bb.model.layers) == 2
    folder = tmp_path / "cache" / "backbones" / digest[:16]
    assert (folder / "model.safetensors").is_file() and len(list((tmp_path / "cache" / "hashes").iterdir())) == 1
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".tmp")]
    ref = src.state_dict()
    for k, v in bb.model.state_dict().items():
        assert torch.equal(v, ref[k]), k                                  # F32: exact round trip
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        hs = src(inputs_embeds=x, output_hidden_states=True).hidden_states
        torch.testing.assert_close(bb(x), src.norm(hs[2]), atol=1e-5, rtol=1e-5)
    assert bb.tokenize(" the").tolist() == [259, 260]                   # "Ġt", "he": the GGUF's BPE merges
    monkeypatch.setattr(fmod, "_convert_gguf", lambda *a: (_ for _ in ()).throw(AssertionError("converted")))
    bb3 = load_backbone(BackboneSpec(source=str(path), layers=3))
    for k, v in bb3.model.state_dict().items():
        assert torch.equal(v, ref[k]), k


def _one_line_error(spec, match):
    with pytest.raises(LinksimError, match=match) as e:
        load_backbone(spec)
    assert "\n" not in str(e.value)


def test_bad_sources_give_one_line_errors(tmp_path, monkeypatch, default_bb):
    from transformers import BertConfig
    _one_line_error(BackboneSpec(layers=31), "only 30")               # the default's cache: no conversion
    monkeypatch.setenv("LINKSIM_CACHE", str(tmp_path / "cache"))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\x00" * 100)
    (tmp_path / "empty").mkdir()
    BertConfig(num_hidden_layers=2).save_pretrained(str(tmp_path / "bert"))
    (tmp_path / "notes.txt").write_text("hi")
    _one_line_error(BackboneSpec(source=str(tmp_path / "missing.gguf")), "not found")
    _one_line_error(BackboneSpec(source="./no/such/folder"), "not found")
    _one_line_error(BackboneSpec(source=str(junk)), "not a loadable GGUF")
    _one_line_error(BackboneSpec(source=str(tmp_path / "notes.txt")), r"\.gguf")
    _one_line_error(BackboneSpec(source=str(tmp_path / "empty")), "no weight files|not a model folder")
    _one_line_error(BackboneSpec(source=str(tmp_path / "bert")), "no weight files|not a causal LM")
    _one_line_error(BackboneSpec(source="nobody-xyz/not-cached-model"), "not in the local Hugging Face cache")
    _one_line_error(BackboneSpec(layers=0), "layers")
    _one_line_error(BackboneSpec(layers="6"), "layers")


def test_bert_folder_with_weights_is_not_a_causal_lm(tmp_path, monkeypatch):
    from transformers import BertConfig, BertModel
    monkeypatch.setenv("LINKSIM_CACHE", str(tmp_path / "cache"))
    BertModel(BertConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=32,
                         vocab_size=50)).save_pretrained(str(tmp_path / "bert"))
    _one_line_error(BackboneSpec(source=str(tmp_path / "bert")), "not a causal LM")


def test_folder_and_cached_hub_id(tmp_path, monkeypatch):
    """A saved causal LM (``model.`` keys + LM head) loads truncated, from a folder or the hub cache."""
    import huggingface_hub.constants as hub
    from transformers import LlamaConfig, LlamaForCausalLM
    monkeypatch.setenv("LINKSIM_CACHE", str(tmp_path / "cache"))
    tok = tiny_backbone(layers=1, width=32, heads=2, kv_heads=1, intermediate=32).tokenizer
    torch.manual_seed(5)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=48,
                                      num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2))
    snap = tmp_path / "hub" / "models--someone--tiny-llama" / "snapshots" / "0123abcd"
    lm.save_pretrained(str(snap))
    tok.save_pretrained(str(snap))
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    ref = lm.model.state_dict()
    for source in (str(snap), "someone/tiny-llama"):
        bb = load_backbone(BackboneSpec(source=source, layers=2))
        assert len(bb.model.layers) == 2 and bb.width == 32 and len(bb.tokenizer) == len(tok)
        assert len(bb.fingerprint) == 16 and not bb.fingerprint.startswith("random")
        for k, v in bb.model.state_dict().items():
            assert torch.equal(v, ref[k]), k
        x = torch.randn(1, 4, 32)
        with torch.no_grad():
            hs = lm.model(inputs_embeds=x, output_hidden_states=True).hidden_states
            torch.testing.assert_close(bb(x), lm.model.norm(hs[2]), atol=1e-5, rtol=1e-5)
    _one_line_error(BackboneSpec(source=str(snap), layers=4), "only 3")


# ------------------------------------------------------------------------- tiny backbone, prefix cache
def test_tiny_backbone_and_fallback_tokenizer(tmp_path, monkeypatch):
    monkeypatch.setenv("LINKSIM_CACHE", str(tmp_path))          # no SmolLM2 cache -> word-level vocabulary
    bb = tiny_backbone(layers=2, width=32, heads=4, kv_heads=2, intermediate=64, seed=1)
    assert bb.config.vocab_size == len(bb.tokenizer) < 500
    ids = bb.tokenize("[Channel prediction] predict the future CSI")
    assert ids.tolist() == [bb.tokenizer.convert_tokens_to_ids(t) for t in
                            ["[", "channel", "prediction", "]", "predict", "the", "future", "csi"]]
    torch.testing.assert_close(bb.embed(ids), bb.model.embed_tokens.weight[ids])
    again = tiny_backbone(layers=2, width=32, heads=4, kv_heads=2, intermediate=64, seed=1)
    assert again.fingerprint == bb.fingerprint
    assert all(torch.equal(p, q) for p, q in zip(bb.parameters(), again.parameters()))
    assert all(not p.requires_grad for p in bb.parameters())


def test_prefix_cache_expanded_equals_concatenated_sequence():
    torch.manual_seed(0)
    bb = tiny_backbone(layers=2)
    P, n, b, d = 7, 5, 4, bb.width
    prefix, data = torch.randn(1, P, d), torch.randn(b, n, d)
    with torch.no_grad():
        ref = bb(torch.cat([prefix.expand(b, -1, -1), data], 1))[:, P:]
        _, cache = bb(prefix, use_cache=True)
        assert cache.get_seq_length() == P
        exp = expand_cache(cache, b)
        assert exp.layers[0].keys.shape[0] == b and cache.layers[0].keys.shape[0] == 1
        out, grown = bb(data, past_key_values=exp, use_cache=True)
        out_auto = bb(data, past_key_values=cache)                 # forward expands batch-1 itself
        out_twice = bb(data, past_key_values=cache)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_auto, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_twice, ref, atol=1e-5, rtol=1e-5)
    assert grown.get_seq_length() == P + n
    assert cache.get_seq_length() == P and exp.get_seq_length() == P          # inputs untouched
    # gradients reach the prefix through the expanded cache (a LoRA-dependent prefix per step)
    prefix.requires_grad_(True)
    _, cache = bb(prefix, use_cache=True)
    bb(data, past_key_values=cache).sum().backward()
    assert prefix.grad is not None and prefix.grad.abs().sum() > 0
