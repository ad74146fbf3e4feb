"""The training loss (gdino.train): parity with transformers' loss, hand-computed cases of the matcher and
the focal loss, which parameters each mode trains, and the targets of multi-chunk class lists."""

import copy
import math

import pytest
import torch
from compare import per_query_error
from tiny_models import make_hf_model, make_mm_hf_model, save_hf

import gdino
from gdino.modeling.heads import inverse_sigmoid
from gdino.modeling.model import TrainingOutput
from gdino.prompts import build_chunks, parse_classes
from gdino.train import (
    ChunkTarget,
    LossConfig,
    MatchCosts,
    chunk_classes,
    chunk_target,
    grounding_loss,
    match,
    sigmoid_focal_loss,
)
from gdino.train.boxes import aligned_giou, pairwise_giou
from gdino.train.matcher import cost_matrix

CLASSES = ["cat", "remote control", "dog", "red truck"]
# per image: (class ids into CLASSES, boxes cxcywh normalised); the third image has no boxes
LABELS = [
    ([0, 3, 1], [[0.3, 0.4, 0.2, 0.3], [0.6, 0.6, 0.3, 0.2], [0.5, 0.5, 0.9, 0.8]]),
    ([2], [[0.2, 0.7, 0.1, 0.2]]),
    ([], []),
]


# ------------------------------------------------------------------------------------ parity helpers

def _fingerprints(model):
    """(shape, bytes) -> our parameter: transformers' parameters find their counterpart by value (the test models'
    weights are random, so equal values mean the same parameter; merged qkv tensors have none and are skipped)."""
    table: dict = {}
    for name, p in model.named_parameters():
        table.setdefault((tuple(p.shape), p.detach().float().numpy().tobytes()), []).append((name, p))
    return {k: v[0] for k, v in table.items() if len(v) == 1}


def _run_both(hf, ours, tokenizer, pixel_values, labels, auxes):
    """Loss and gradients of transformers (labels=..., eval mode) and ours (mode="transformers") on one batch
    whose images share one prompt, from one forward of each model. Yields (hf loss, hf loss_dict, our LossOutput)
    per entry of `auxes` (auxiliary losses on/off), gradients filled: compare before taking the next. The first
    is transformers' forward itself; a later one calls the loss function that forward calls (L2556-2570), on the
    same outputs, with the other auxiliary_loss setting."""
    from transformers.models.grounding_dino.modeling_grounding_dino import build_label_maps, build_text_mask

    prompt = parse_classes(CLASSES)
    (chunk,) = build_chunks(prompt, tokenizer)
    classes = chunk_classes(prompt, chunk)
    ids = torch.tensor([chunk.input_ids] * pixel_values.shape[0])
    hf_labels = [{"class_labels": torch.tensor(c, dtype=torch.int64), "boxes": torch.tensor(bx).reshape(-1, 4)}
                 for c, bx in labels]
    hf.config.auxiliary_loss = auxes[0]
    hf.zero_grad(set_to_none=True)
    ref = hf(pixel_values=pixel_values, input_ids=ids, attention_mask=torch.ones_like(ids),
             token_type_ids=torch.zeros_like(ids), labels=hf_labels)
    # our class -> token map is exact by construction; transformers' comes from the delimiters: the same here
    label_maps = build_label_maps(ref.logits, ids)
    assert torch.equal(label_maps[0].bool(), classes.token_map)

    out = ours.decode_train(ours.encode_image(pixel_values), ours.encode_text(ids))
    # a precondition, not the loss: the two forwards agree query by query. Where top-k selection breaks a float32
    # tie the other way (random full-size weights make that possible: test_mm_parity's tie-aware test), one
    # query differs and loss_ce, a sum over every query, moves by ~1e-4; the seeds here have no such tie.
    err = per_query_error(ref.logits, ref.pred_boxes, out.logits[-1].detach(), out.pred_boxes()[-1].detach())
    assert err.max() <= 1e-3, f"the forwards differ (a top-k tie?): worst query {err.max().item():.2e}"
    targets = [chunk_target(c, torch.tensor(bx).reshape(-1, 4), classes) for c, bx in labels]
    for k, aux in enumerate(auxes):
        hf.zero_grad(set_to_none=True)
        ours.zero_grad(set_to_none=True)
        if k == 0:
            ref_loss, ref_terms = ref.loss, ref.loss_dict
        else:
            assert not aux, "later entries can only turn the auxiliary losses off (the forward made no aux outputs)"
            config = copy.deepcopy(hf.config)
            config.auxiliary_loss = aux
            ref_loss, ref_terms, _ = hf.loss_function(
                ref.logits, hf_labels, hf.device, ref.pred_boxes, config, label_maps,
                build_text_mask(ref.logits, torch.ones_like(ids)), encoder_logits=ref.encoder_logits,
                encoder_pred_boxes=ref.encoder_pred_boxes)
        ref_loss.backward(retain_graph=True)
        loss = grounding_loss(out, targets, classes.token_map, LossConfig(mode="transformers", aux_loss=aux))
        loss.total.backward(retain_graph=True)
        yield ref_loss, ref_terms, loss


def _check_terms(ref_total, ref_terms, loss, num_layers, aux):
    expected = {"loss_ce", "loss_bbox", "loss_giou", "cardinality_error"}
    suffixes = [""] + ([f"_{i}" for i in range(num_layers - 1)] if aux else []) + ["_enc"]
    assert set(ref_terms) == {k + s for k in expected for s in suffixes} == set(loss.terms)
    worst = 0.0
    for key, value in ref_terms.items():
        rel = abs(loss.terms[key].item() - value.item()) / max(abs(value.item()), 1e-12)
        assert rel <= 1e-4, f"{key}: transformers {value.item():.6g}, ours {loss.terms[key].item():.6g}"
        worst = max(worst, rel)
    assert abs(loss.total.item() - ref_total.item()) <= 1e-4 * abs(ref_total.item())
    assert all(math.isfinite(v.item()) and v.item() > 0 for k, v in loss.terms.items() if k.startswith("loss_"))
    return worst


def _check_grads(hf, ours, table, loose=("sampling_offsets",)):
    """Every transformers parameter with a gradient and a counterpart: ||g_ours - g_hf|| <= 1e-3 ||g_hf||.
    Skipped: attention key biases, whose true gradient is 0 (softmax ignores a shift shared by all keys), so
    both sides hold rounding noise. `loose` (1e-2): the sampling offsets, whose gradient is that of bilinear
    sampling, discontinuous at pixel centres: on the full model a 1e-6 change of the input moves transformers'
    own gradient there by 2e-3."""
    compared, worst, worst_loose = 0, 0.0, 0.0
    for name, p in hf.named_parameters():
        if p.grad is None or name.endswith("key.bias"):
            continue
        match_ = table.get((tuple(p.shape), p.detach().float().numpy().tobytes()))
        if match_ is None:
            continue
        ours_name, q = match_
        g_ref = p.grad
        if g_ref.norm() == 0:
            assert q.grad is None or q.grad.norm() == 0, name
            continue
        assert q.grad is not None, f"{ours_name} got no gradient; transformers' {name} did"
        rel = ((q.grad - g_ref).norm() / g_ref.norm()).item()
        tol = 1e-2 if any(s in name for s in loose) else 1e-3
        assert rel <= tol, f"{name} / {ours_name}: gradient differs by {rel:.2e} (relative)"
        if any(s in name for s in loose):
            worst_loose = max(worst_loose, rel)
        else:
            worst = max(worst, rel)
        compared += 1
    print(f"  worst sampling-offset gradient {worst_loose:.1e}" if loose else "", end="")
    return compared, worst


@pytest.fixture(scope="module")
def tiny_pair(tokenizer, tmp_path_factory):
    """gdino family: (transformers, ours, value table); ours trainable, both in eval mode (no dropout)."""
    hf = make_hf_model("tiny", seed=3)
    ours = gdino.load_model(save_hf(hf, tokenizer, tmp_path_factory.mktemp("loss_tiny"))).requires_grad_(True)
    return hf, ours, _fingerprints(ours)


@pytest.fixture(scope="module")
def mm_pair(tokenizer, tmp_path_factory):
    hf = make_mm_hf_model("tiny", seed=4)
    ours = gdino.load_model(save_hf(hf, tokenizer, tmp_path_factory.mktemp("loss_mm"))).requires_grad_(True)
    return hf, ours, _fingerprints(ours)


# ------------------------------------------------------------------------------------ parity tests

@pytest.mark.parametrize("family", ["gdino", "mm_gdino"])
@pytest.mark.parametrize("aux", [False, True])
def test_tiny_loss_and_gradients_match_transformers(family, aux, tiny_pair, mm_pair, tokenizer):
    hf, ours, table = tiny_pair if family == "gdino" else mm_pair
    torch.manual_seed(5)
    pixel_values = torch.randn(3, 3, 128, 150)
    ((ref_total, ref_terms, loss),) = _run_both(hf, ours, tokenizer, pixel_values, LABELS, (aux,))
    worst = _check_terms(ref_total, ref_terms, loss, ours.config.decoder_layers, aux)
    compared, worst_grad = _check_grads(hf, ours, table, loose=())
    print(f"{family} aux={aux}: worst term {worst:.1e}, {compared} gradients, worst {worst_grad:.1e}")
    assert compared > 200  # backbone, BERT, encoder, decoder and heads all took part
    assert ours.transformer.tgt_embed.weight.grad.norm() > 0  # transformers' "encoder" loss trains the queries


def test_full_swin_t_loss_and_gradients_match_transformers(tokenizer, tmp_path):
    """The real architecture (Swin-T, BERT-base, 6+6 layers, 900 queries) with random weights, all terms
    with and without auxiliary losses. The backbone and BERT are frozen on both sides (the default for fine-tuning,
    and what keeps this test to seconds on a CPU); the tiny tests check their gradients."""
    hf = make_hf_model("swin_t", seed=1)
    ours = gdino.load_model(save_hf(hf, tokenizer, tmp_path / "swin_t")).requires_grad_(True)
    for model in (hf.model.backbone, hf.model.text_backbone, ours.backbone, ours.bert):
        model.requires_grad_(False)
    torch.manual_seed(1)
    pixel_values = torch.randn(2, 3, 184, 240)  # the smallest size with 900 positions to select from
    table = _fingerprints(ours)
    for ref_total, ref_terms, loss in _run_both(hf, ours, tokenizer, pixel_values, LABELS[:2], (True, False)):
        aux = "loss_ce_0" in ref_terms
        worst = _check_terms(ref_total, ref_terms, loss, 6, aux=aux)
        compared, worst_grad = _check_grads(hf, ours, table)
        print(f"swin_t aux={aux}: worst term {worst:.1e}, {compared} gradients, worst (sampling offsets aside) "
              f"{worst_grad:.1e}")
        assert compared > 300


# ------------------------------------------------------------------------------------ focal loss, boxes, matcher

def test_focal_loss_hand_computed():
    # x=0, t=1: p=1/2, BCE=ln 2, (1-p_t)^2=1/4, alpha_t=1/4         -> ln(2)/16               = 0.0433217
    # x=2, t=0: p=0.8807971, BCE=softplus(2)=2.1269280, (1-p_t)^2=p^2=0.7758034, alpha_t=3/4 -> 1.2375587
    # x=-1, t=0: p=0.2689414, BCE=softplus(-1)=0.3132617, p^2=0.0723295, alpha_t=3/4        -> 0.0169938
    logits = torch.tensor([0.0, 2.0, -1.0])
    targets = torch.tensor([1.0, 0.0, 0.0])
    assert sigmoid_focal_loss(logits, targets).item() == pytest.approx(0.0433217 + 1.2375587 + 0.0169938, rel=1e-5)
    # gamma 0, no alpha: plain BCE summed: ln 2 + softplus(2) + softplus(-1)
    assert sigmoid_focal_loss(logits, targets, alpha=-1, gamma=0).item() == pytest.approx(
        0.6931472 + 2.1269280 + 0.3132617, rel=1e-6)


def test_giou_hand_computed():
    a = torch.tensor([[0.0, 0.0, 0.4, 0.4]])
    b = torch.tensor([[0.2, 0.2, 0.6, 0.6], [0.0, 0.0, 0.4, 0.4], [0.5, 0.0, 0.6, 0.1]])
    # overlap: inter 0.04, union 0.28, hull 0.36 -> 1/7 - 0.08/0.36; identical -> 1;
    # disjoint: union 0.16 + 0.01, hull 0.6 x 0.4 = 0.24 -> -(0.24 - 0.17) / 0.24
    expected = [1 / 7 - 0.08 / 0.36, 1.0, -(0.24 - 0.17) / 0.24]
    assert pairwise_giou(a, b)[0].tolist() == pytest.approx(expected, abs=1e-6)
    assert aligned_giou(a.expand(3, 4), b).tolist() == pytest.approx(expected, abs=1e-6)


LN3 = math.log(3.0)
# focal cost of one token, pos(p) - neg(p) with alpha 1/4, gamma 2:
# p = 3/4 (logit ln 3):  (1/4)(1/16)(-ln 3/4) - (3/4)(9/16)(-ln 1/4) = 0.0044950 - 0.5848430 = -0.5803480
# p = 1/2 (logit 0):     (1/4)(1/4)(ln 2)     - (3/4)(1/4)(ln 2)     = -0.0866434
# p = 1/4 (logit -ln 3): (1/4)(9/16)(ln 4)    - (3/4)(1/16)(-ln 3/4) = 0.1949477 - 0.0134851 = 0.1814626
C_HI, C_MID, C_LO = -0.5803480, -0.0866434, 0.1814626


def test_class_cost_hand_computed():
    logits = torch.tensor([[LN3, LN3, 0.0, -math.inf],  # the 4th token is past the text
                           [0.0, -LN3, LN3, -math.inf]])
    token_maps = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 0]])  # target A: tokens 0 and 1; target B: token 2
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.2]] * 2)
    cost = cost_matrix(logits, boxes, token_maps, boxes, MatchCosts(class_cost=1, bbox_cost=0, giou_cost=0))
    expected = [[C_HI, C_MID], [(C_MID + C_LO) / 2, C_HI]]  # averaged over the target's tokens
    assert cost.tolist()[0] == pytest.approx(expected[0], abs=1e-6)
    assert cost.tolist()[1] == pytest.approx(expected[1], abs=1e-6)
    q, t = match(logits, boxes, token_maps, boxes, MatchCosts(class_cost=1, bbox_cost=0, giou_cost=0))
    assert q.tolist() == [0, 1] and t.tolist() == [0, 1]


def test_matcher_finds_the_optimum_not_the_greedy_choice():
    # L1 cost only (|dx|): targets at x=0.5 and x=0.3, queries at 0.45 and 0.6. Greedy takes q0->t0 (0.05)
    # then q1->t1 (0.3): 0.35 in all; the optimum is q0->t1 (0.15) and q1->t0 (0.1): 0.25.
    boxes = torch.tensor([[0.45, 0.5, 0.2, 0.2], [0.6, 0.5, 0.2, 0.2]])
    targets = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.3, 0.5, 0.2, 0.2]])
    logits = torch.zeros(2, 3)
    maps = torch.tensor([[1, 0, 0], [0, 1, 0]])
    q, t = match(logits, boxes, maps, targets, MatchCosts(class_cost=0, bbox_cost=1, giou_cost=0))
    assert dict(zip(q.tolist(), t.tolist(), strict=True)) == {0: 1, 1: 0}


def test_matcher_survives_nan_and_inf():
    boxes = torch.tensor([[float("nan"), 0.5, 0.2, 0.2], [0.9, 0.9, 0.1, 0.1], [0.5, 0.5, 0.2, float("inf")]])
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0], [math.inf, 0.0]])
    target = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    cost = cost_matrix(logits, boxes, torch.tensor([[1, 0]]), target)
    assert torch.isfinite(cost).all()
    q, t = match(logits, boxes, torch.tensor([[1, 0]]), target)
    assert q.tolist() == [1] and t.tolist() == [0]  # the only query with a finite cost
    q, t = match(logits, boxes, torch.zeros(0, 2), torch.zeros(0, 4))
    assert q.numel() == t.numel() == 0


def _hand_output(logits, boxes, text_valid):
    """A one-layer TrainingOutput whose boxes are `boxes`: references at 0.5 (logit 0), deltas = logit(box)."""
    half = torch.full_like(boxes, 0.5)
    return TrainingOutput(logits=logits[None], box_deltas=inverse_sigmoid(boxes)[None], references=half[None],
                          enc_logits=logits, enc_boxes=boxes, query_logits=logits, text_valid=text_valid)


def test_loss_of_one_stage_hand_computed():
    # 2 queries, 3 text tokens and one position past the text; one box of the class on tokens 0 and 1.
    # q0 matches (its box is near, q1's far). Focal terms, alpha 1/4, gamma 2:
    #   q0: tokens 0, 1 positive at p=3/4: (1/4)(1/4)^2(-ln 3/4) = 0.0044950 each; token 2 negative at p=1/4:
    #       (3/4)(1/4)^2(-ln 3/4) = 0.0134851
    #   q1: three negatives at p=1/4: 0.0134851 each;  the 4th position is ignored (-inf, past the text)
    # loss_ce = 2 * 0.0044950 + 4 * 0.0134851 = 0.0629305 (1 box).
    # q0's box is the target moved by 0.1 in x (both 0.2 x 0.2): L1 = 0.1; inter 0.02, union 0.06, hull 0.06:
    # GIoU = 1/3, loss_giou = 2/3.
    logits = torch.tensor([[[LN3, LN3, -LN3, -math.inf], [-LN3, -LN3, -LN3, -math.inf]]])
    boxes = torch.tensor([[[0.6, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]]])
    out = _hand_output(logits, boxes, torch.tensor([[True, True, True]]))
    target = ChunkTarget(torch.tensor([1]), torch.tensor([[0.5, 0.5, 0.2, 0.2]]))
    token_maps = torch.tensor([[0, 0, 1], [1, 1, 0]], dtype=torch.bool)  # class 1: tokens 0 and 1
    for mode in ("transformers", "reference"):
        loss = grounding_loss(out, [target], token_maps, LossConfig(mode=mode, aux_loss=False, encoder_loss=False))
        assert loss.matches[""][0][0].tolist() == [0]
        assert loss.terms["loss_ce"].item() == pytest.approx(0.0629305, rel=1e-5)
        assert loss.terms["loss_bbox"].item() == pytest.approx(0.1, rel=1e-5)
        assert loss.terms["loss_giou"].item() == pytest.approx(2 / 3, rel=1e-5)
        assert loss.terms["cardinality_error"].item() == 0.0  # one confident query (q0, p=3/4), one box
        assert loss.total.item() == pytest.approx(2 * 0.0629305 + 5 * 0.1 + 2 * 2 / 3, rel=1e-5)


def test_mixed_prompts_use_each_images_own_token_map():
    """transformers offsets image i's classes by the size of image i's OWN label map (its mixed-prompt bug);
    ours indexes each image's map: the second image's target tokens come from its own map."""
    logits = torch.zeros(2, 1, 4)
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2]], [[0.5, 0.5, 0.2, 0.2]]])
    out = _hand_output(logits, boxes, torch.ones(2, 4, dtype=torch.bool))
    maps = [torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0]]), torch.tensor([[0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]])]
    targets = [ChunkTarget(torch.tensor([1]), boxes[0]), ChunkTarget(torch.tensor([1]), boxes[1])]
    loss = grounding_loss(out, targets, maps, LossConfig(aux_loss=False, encoder_loss=False))
    # each query has one positive token at p=1/2, three negatives at p=1/2:
    # (1/4)(1/4) ln 2 + 3 (3/4)(1/4) ln 2 = (10/16) ln 2 per image, 2 boxes -> (10/16) ln 2
    assert loss.terms["loss_ce"].item() == pytest.approx(10 / 16 * math.log(2), rel=1e-6)
    maps[1] = torch.tensor([[0, 0, 1, 0], [1, 1, 1, 0], [1, 0, 0, 0]])  # 3 positives: the map is read
    loss = grounding_loss(out, targets, maps, LossConfig(aux_loss=False, encoder_loss=False))
    # image 1: three positives and one negative at p=1/2: (3/16 + 3/16) ln 2; with image 0's (10/16) ln 2, over 2
    assert loss.terms["loss_ce"].item() == pytest.approx((10 / 16 + 6 / 16) / 2 * math.log(2), rel=1e-6)


# ------------------------------------------------------------------------------------ what each mode trains

def _enc_grads(ours, tokenizer, mode, terms):
    prompt = parse_classes(CLASSES)
    (chunk,) = build_chunks(prompt, tokenizer)
    classes = chunk_classes(prompt, chunk)
    ids = torch.tensor([chunk.input_ids] * 2)
    ours.zero_grad(set_to_none=True)
    torch.manual_seed(7)
    out = ours.decode_train(ours.encode_image(torch.randn(2, 3, 128, 150)), ours.encode_text(ids))
    targets = [chunk_target(c, torch.tensor(b).reshape(-1, 4), classes) for c, b in LABELS[:2]]
    loss = grounding_loss(out, targets, classes.token_map, LossConfig(mode=mode))
    sum(loss.terms[k] for k in terms).backward()
    return {n: (p.grad is not None and p.grad.norm().item() > 0) for n, p in ours.named_parameters()}


@pytest.mark.parametrize("family", ["gdino", "mm_gdino"])
def test_reference_encoder_loss_reaches_the_encoder(family, tiny_pair, mm_pair, tokenizer):
    ours = (tiny_pair if family == "gdino" else mm_pair)[1]
    enc_terms = ["loss_ce_enc", "loss_bbox_enc", "loss_giou_enc"]
    got = _enc_grads(ours, tokenizer, "reference", enc_terms)
    for name in ["transformer.encoder.layers.0.linear1.weight", "transformer.encoder.fusion_layers.1.attn.v_proj.weight",
                 "transformer.encoder.text_layers.1.linear2.weight", "transformer.enc_output.weight",
                 "transformer.enc_out_bbox_embed.layers.2.weight", "backbone.patch_embed.proj.weight"]:
        assert got[name], f"the reference encoder loss does not reach {name}"
    assert not got["transformer.tgt_embed.weight"]  # the decoder's queries play no part in it
    # transformers' encoder loss: learned queries against the text before the encoder, detached boxes:
    # nothing of the encoder, the image side or the encoder box head learns from it
    got = _enc_grads(ours, tokenizer, "transformers", enc_terms)
    assert got["transformer.tgt_embed.weight"] and got["feat_map.weight"]
    for name in ["transformer.encoder.layers.0.linear1.weight", "transformer.enc_output.weight",
                 "transformer.enc_out_bbox_embed.layers.2.weight", "backbone.patch_embed.proj.weight"]:
        assert not got[name], name


def test_reference_mode_looks_forward_twice(mm_pair, tokenizer):
    """The last layer's box loss trains the previous layer's box head only in reference mode (its box refines
    the previous layer's undetached box); transformers detaches it."""
    ours = mm_pair[1]
    assert _enc_grads(ours, tokenizer, "reference", ["loss_bbox"])["bbox_embed.1.layers.0.weight"]
    assert not _enc_grads(ours, tokenizer, "transformers", ["loss_bbox"])["bbox_embed.1.layers.0.weight"]


def test_decode_train_last_layer_equals_decode(tiny_pair, mm_pair, tokenizer):
    for _, ours, _ in (tiny_pair, mm_pair):
        enc = tokenizer(["a cat . remote control ."], return_tensors="pt")
        x = torch.randn(1, 3, 100, 131)
        with torch.no_grad():
            image, text = ours.encode_image(x), ours.encode_text(**enc)
            plain = ours.decode(image, text)
            train = ours.decode_train(image, text)
        assert torch.equal(train.logits[-1], plain.logits)
        assert torch.equal(train.pred_boxes()[-1], plain.pred_boxes)
        assert torch.equal(train.pred_boxes(look_forward_twice=True), train.pred_boxes())
        assert train.logits.shape == (ours.config.decoder_layers, 1, ours.config.num_queries, 256)


# ------------------------------------------------------------------------------------ targets

def test_targets_of_a_multi_chunk_class_list(tokenizer):
    prompt = parse_classes({"cat": ["cat"], "remote": ["remote control"], "dog": ["dog", "big dog"],
                            "car": ["red car"], "person": ["man"]})
    # at most 10 tokens per prompt: [CLS] + 8 + [SEP]
    chunks = build_chunks(prompt, tokenizer, max_len=10)
    assert [tokenizer.decode(list(c.input_ids)) for c in chunks] == [
        "[CLS] cat. remote control. dog. [SEP]", "[CLS] big dog. red car. man. [SEP]"]
    first, second = (chunk_classes(prompt, c, max_len=12) for c in chunks)
    # positions:      0     1    2  3       4       5  6    7  8
    # first chunk:  [CLS] cat  .  remote  control  .  dog  .  [SEP]
    assert first.labels == (0, 1, 2)
    assert first.token_map.shape == (3, 12)
    assert [torch.nonzero(r).flatten().tolist() for r in first.token_map] == [[1], [3, 4], [6]]
    # second chunk: [CLS] big dog  .  red  car  .  man  .  [SEP]; "dog" has its synonym "big dog" here
    assert second.labels == (2, 3, 4)
    assert [torch.nonzero(r).flatten().tolist() for r in second.token_map] == [[1, 2], [4, 5], [7]]

    class_ids = torch.tensor([0, 2, 4, 1])  # cat, dog, person, remote
    boxes = torch.tensor([[0.1, 0.1, 0.1, 0.1], [0.2, 0.2, 0.1, 0.1], [0.3, 0.3, 0.1, 0.1], [0.4, 0.4, 0.1, 0.1]])
    t1 = chunk_target(class_ids, boxes, first)
    assert t1.classes.tolist() == [0, 2, 1]  # rows of the first chunk: cat, dog, remote; the person is dropped
    assert torch.equal(t1.boxes, boxes[[0, 1, 3]])
    t2 = chunk_target(class_ids, boxes, second)
    assert t2.classes.tolist() == [0, 2]  # dog, person
    assert torch.equal(t2.boxes, boxes[[1, 2]])
    empty = chunk_target([], torch.zeros(0, 4), second)
    assert empty.classes.shape == (0,) and empty.boxes.shape == (0, 4)
    with pytest.raises(ValueError):
        chunk_target([0, 1], boxes[:1], first)
