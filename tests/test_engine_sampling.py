"""The sampler's request parameters on a real tiny CPU engine: penalties, logit biases, min_tokens and logprobs
against the raw logits, numerically extreme temperatures and top_p, one request's failed sampling failing only that
request, and text streamed as soon as it decodes."""
from __future__ import annotations

import pytest
import torch

from engine_helpers import LogitsRecorder, make_engine
from gpusleuth.engine.sampler import apply_processors
from gpusleuth.engine.sequence import SamplingError, SamplingParams, Sequence
from gpusleuth.engine.tokenizer import ByteTokenizer, IncrementalDetokenizer

GREEDY = dict(max_tokens=40, temperature=0.0, is_ignore_eos=True)


@pytest.fixture(scope="module")
def engine():
    return make_engine(max_model_len=256)


def _ids(engine, params: SamplingParams, prompt: str = "penalty test") -> list[int]:
    return engine.generate([engine.tokenizer.encode(prompt)], params)[0]["token_ids"]


@pytest.mark.parametrize("key,value", [("presence_penalty", 2.0), ("frequency_penalty", 2.0),
                                       ("repetition_penalty", 5.0)])
def test_penalties_stop_greedy_repetition(engine, key, value):
    free = _ids(engine, SamplingParams(**GREEDY))
    penalised = _ids(engine, SamplingParams(**GREEDY, **{key: value}))
    assert len(set(free)) < len(free) / 2  # the random tiny model repeats itself greedily
    assert len(set(penalised)) > len(set(free)) * 4


def test_processors_match_a_plain_reference():
    seq = Sequence("r", [5, 6, 6, 7, 7, 7], SamplingParams(presence_penalty=0.5, frequency_penalty=0.25,
                                                             repetition_penalty=2.0, logit_bias={9: 3.0}),
                   num_prompt=2)
    logits = torch.linspace(-2, 2, 12)
    want = logits.clone()
    for t in {5, 6, 7}:  # repetition: prompt and output
        want[t] = want[t] / 2.0 if want[t] > 0 else want[t] * 2.0
    for t, count in ((6, 1), (7, 3)):  # presence/frequency: output only (6, 7, 7, 7)
        want[t] -= 0.25 * count + 0.5
    want[9] += 3.0
    assert torch.allclose(apply_processors(logits, seq, (11,)), want)


def test_logit_bias_and_min_tokens(engine):
    eos = engine.tokenizer.eos_token_ids[0]
    assert set(_ids(engine, SamplingParams(**{**GREEDY, "max_tokens": 8}, logit_bias={65: 100.0}))) == {65}
    pushed = SamplingParams(max_tokens=12, temperature=0.0, logit_bias={eos: 100.0})
    assert _ids(engine, pushed) == [eos]
    held = SamplingParams(max_tokens=12, temperature=0.0, logit_bias={eos: 100.0}, min_tokens=5)
    ids = _ids(engine, held)
    assert len(ids) == 6 and ids[-1] == eos and eos not in ids[:-1]


def test_logprobs_are_the_models_log_softmax(engine):
    rec = LogitsRecorder()
    engine.logits_hook = rec
    try:
        engine.add_request("lp", engine.tokenizer.encode("logprobs"),
                           SamplingParams(max_tokens=4, temperature=0.0, is_ignore_eos=True, logprobs=3))
        outs = []
        while engine.has_work:
            outs += [o for o in engine.step() if o.request_id == "lp"]
    finally:
        engine.logits_hook = None
    for out, row in zip(outs, rec.rows["lp"]):
        lp = torch.log_softmax(row, -1)
        (token,), (got,) = out.new_token_ids, out.logprobs
        assert got.logprob == pytest.approx(float(lp[token]), abs=1e-5)
        assert [t for t, _ in got.top] == torch.topk(lp, 3).indices.tolist()
        assert token == got.top[0][0]  # greedy: the sampled token is the most likely one


@pytest.mark.parametrize("params", [dict(temperature=1e-300), dict(temperature=5e-324), dict(temperature=1e-39),
                                    dict(temperature=0.8, top_p=1e-300), dict(temperature=100.0, top_k=1)])
def test_extreme_temperature_and_top_p_sample_the_top_token(engine, params):
    assert _ids(engine, SamplingParams(**{**GREEDY, "max_tokens": 12, **params}, seed=3)) == \
        _ids(engine, SamplingParams(**{**GREEDY, "max_tokens": 12}))


@pytest.mark.parametrize("key,value", [("seed", 2**64), ("seed", -1), ("temperature", 101.0), ("top_p", 0.0),
                                       ("min_tokens", 17), ("presence_penalty", 2.5), ("repetition_penalty", 5e-324),
                                       ("logit_bias", {1: 101.0}), ("logprobs", 21)])
def test_out_of_range_parameters_name_the_field(key, value):
    with pytest.raises(SamplingError) as err:
        SamplingParams(**{key: value})
    assert err.value.param == key


def test_token_ids_outside_the_vocabulary_are_refused(engine):
    for key, value in (("stop_token_ids", [engine.runner.cfg.vocab_size]), ("logit_bias", {10**30: 1.0})):
        with pytest.raises(SamplingError) as err:
            engine.check_request([1, 2], SamplingParams(**{key: value}))
        assert err.value.param == key


def test_a_failed_row_fails_only_its_request(engine):
    def poison(seqs, logits):  # NaN logits (a numerically broken row) for one request
        for row, seq in enumerate(seqs):
            if seq.request_id == "bad":
                with torch.inference_mode():  # the runner's logits are inference tensors
                    logits[row] = float("nan")

    engine.logits_hook = poison
    try:
        engine.add_request("bad", [1, 2, 3], SamplingParams(max_tokens=8, temperature=1.0, is_ignore_eos=True))
        engine.add_request("good", [1, 2, 3], SamplingParams(max_tokens=8, temperature=1.0, is_ignore_eos=True))
        last = {}
        while engine.has_work:
            for out in engine.step():
                last[out.request_id] = out
    finally:
        engine.logits_hook = None
    assert last["bad"].finish_reason == "error" and "probability" in last["bad"].error
    assert last["good"].finish_reason == "length" and last["good"].num_output_tokens == 8
    assert engine.allocator.num_free == engine.allocator.num_usable


@pytest.mark.parametrize("ids,want_early", [([0x41, 0xE2, 0x82, 0xAC, 0x42], ["A", "", "", "€", "B"]),
                                            ([0x80] * 6, ["", "", "", "\ufffd" * 4, "", ""])])
def test_stream_text_comes_out_as_soon_as_it_decodes(ids, want_early):
    detok = IncrementalDetokenizer(ByteTokenizer(256, (257,), 512), 0)
    got = [detok.delta(ids[:i + 1], is_final=False) for i in range(len(ids))]
    assert got == want_early
    assert "".join(got) + detok.delta(ids, is_final=True) == bytes(ids).decode("utf-8", errors="replace")
