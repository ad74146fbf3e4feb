"""The Segmenter's memory cache across threads and views: one image is embedded once when a prefetch and a
click ask for it at the same time, views made by `using` share the cache, and a failed embedding lets the
waiting thread try again instead of hanging."""

import threading

import numpy as np
import pytest
from tiny_sam import make_tiny_sam

from gdino.sam.sam1 import Sam1Backend
from gdino.sam.segmenter import Segmenter


class HeldBackend(Sam1Backend):
    """SAM 1 whose image encoder, the first time, announces it started and waits until released."""

    def __init__(self, sam, fail_first: bool = False):
        super().__init__(sam)
        self.started, self.release = threading.Event(), threading.Event()
        self.fail_first = fail_first
        self.calls = 0

    def embed(self, rgb):
        self.calls += 1
        if self.calls == 1:
            self.started.set()
            assert self.release.wait(30)
            if self.fail_first:
                raise RuntimeError("the encoder failed")
        return super().embed(rgb)


def photo(seed=0):
    return np.random.default_rng(seed).integers(0, 255, (60, 80, 3), dtype=np.uint8)


def test_a_click_waits_for_the_prefetch_of_its_image_instead_of_embedding_it_again():
    backend = HeldBackend(make_tiny_sam())
    seg = Segmenter(backend)
    image = photo()
    prefetch = threading.Thread(target=seg.embed, args=(image,))
    prefetch.start()
    assert backend.started.wait(30)
    clicked = {}
    click = threading.Thread(target=lambda: clicked.update(r=seg.refine(image, points=[(10, 10)], labels=[1])))
    click.start()
    backend.release.set()
    prefetch.join(30)
    click.join(30)
    assert backend.calls == 1 and seg.encoder_calls == 1 and clicked["r"].mask.shape == (60, 80)


def test_a_failed_embedding_is_tried_again_by_the_thread_that_waited_for_it():
    backend = HeldBackend(make_tiny_sam(), fail_first=True)
    seg = Segmenter(backend)
    image = photo()
    errors = []

    def prefetch():
        try:
            seg.embed(image)
        except RuntimeError as err:
            errors.append(err)

    first = threading.Thread(target=prefetch)
    first.start()
    assert backend.started.wait(30)
    second = threading.Thread(target=seg.embed, args=(image,))
    second.start()
    backend.release.set()
    first.join(30)
    second.join(30)
    assert not second.is_alive() and len(errors) == 1 and backend.calls == 2 and seg.encoder_calls == 1


def test_views_share_one_memory_cache_and_other_images_are_embedded_apart():
    seg = Segmenter(make_tiny_sam(), cache_size=2)
    view = seg.using(None)
    seg.embed(photo(0))
    view.refine(photo(0), points=[(5, 5)], labels=[1])
    assert seg.encoder_calls == view.encoder_calls == 1
    view.embed(photo(1))
    view.embed(photo(2))  # the cache holds 2: photo(0) is out
    seg.embed(photo(0))
    assert seg.encoder_calls == 4


@pytest.mark.parametrize("cache_size", [0, 1])
def test_no_memory_cache_still_embeds_each_call_once(cache_size):
    seg = Segmenter(make_tiny_sam(), cache_size=cache_size)
    seg.embed(photo())
    seg.embed(photo())
    assert seg.encoder_calls == (2 if cache_size == 0 else 1)


class SignalledBackend(Sam1Backend):
    """SAM 1 that announces each image embedding as it begins (its key is in flight by then)."""

    def __init__(self, sam):
        super().__init__(sam)
        self.started = threading.Event()

    def embed(self, rgb):
        self.started.set()
        return super().embed(rgb)


def test_a_background_embedding_waits_while_a_click_runs_and_finishes_after():
    seg = Segmenter(SignalledBackend(make_tiny_sam()))
    image = photo(3)
    with seg.interactive():  # a click under way in another thread
        background = threading.Thread(target=seg.embed, args=(image,), kwargs={"background": True})
        background.start()
        assert seg.backend.started.wait(30)
        background.join(0.5)
        assert background.is_alive() and seg.encoder_calls == 0  # paused at its first module
    background.join(30)
    assert not background.is_alive() and seg.encoder_calls == 1


def test_a_click_on_the_image_a_paused_background_embedding_holds_lets_it_go_on():
    """The click waits for the background embedding of its own image; it must not keep that embedding paused
    (a deadlock): its section is let go while it waits."""
    seg = Segmenter(SignalledBackend(make_tiny_sam()))
    image = photo(4)
    clicked = {}
    with seg.interactive():  # another click holds the background one paused
        background = threading.Thread(target=seg.embed, args=(image,), kwargs={"background": True})
        background.start()
        assert seg.backend.started.wait(30)
        click = threading.Thread(target=lambda: clicked.update(r=seg.refine(image, points=[(5, 5)], labels=[1])))
        click.start()
    background.join(30)
    click.join(30)
    assert not background.is_alive() and not click.is_alive()
    assert seg.encoder_calls == 1 and clicked["r"].mask.shape == (60, 80)
    assert seg._shared.decoding == 0
