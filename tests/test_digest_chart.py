"""The digest's pipeline chart: a real, small PNG of the intended size for any pipeline, with the
previous digest's amounts (and a legend) only when there was a previous digest."""

from __future__ import annotations

import io
import struct
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from PIL import Image

from handlers.digest_chart import BEFORE_COLOUR, NOW_COLOUR, StageBar, compact, pipeline_chart

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WIDTH, HEIGHT = 640, 320
MAX_BYTES = 25_000

SIX = [
    StageBar("Prospecting", Decimal("1250000"), Decimal("1100000")),
    StageBar("Qualification", Decimal("840000"), Decimal("910000")),
    StageBar("Needs analysis", Decimal("620500"), Decimal("400000")),
    StageBar("Proposal / price quote", Decimal("350000"), Decimal("380000")),
    StageBar("Negotiation / review", Decimal("1900000"), Decimal("1500000")),
    StageBar("Verbal commit", Decimal("95000"), Decimal("0")),
]


def chart(bars: list[StageBar], title: str = "Pipeline by stage") -> bytes:
    return pipeline_chart(bars, currency="EUR", title=title)


def without_before(bars: list[StageBar]) -> list[StageBar]:
    return [StageBar(bar.stage, bar.now, None) for bar in bars]


def size_of(png: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which must come first."""
    assert png[:8] == PNG_SIGNATURE
    length, kind, width, height = struct.unpack(">I4sII", png[8:24])
    assert (length, kind) == (13, b"IHDR")
    return width, height


def pixels(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png)).convert("RGB")


def colours(png: bytes) -> int:
    found = pixels(png).getcolors(maxcolors=WIDTH * HEIGHT)
    assert found is not None
    return len(found)


def count_near(image: Image.Image, colour: str, box: tuple[int, int, int, int] = (0, 0, WIDTH, HEIGHT)) -> int:
    """Pixels in `box` within a few levels of `colour` (palette reduction may shift it a little)."""
    want = tuple(int(colour[index:index + 2], 16) for index in (1, 3, 5))
    found = image.crop(box).getcolors(maxcolors=WIDTH * HEIGHT)
    assert found is not None
    total = 0
    for count, pixel in found:
        assert isinstance(pixel, tuple)
        if sum(abs(a - b) for a, b in zip(pixel, want)) <= 24:
            total += count
    return total


def assert_small_valid_png(png: bytes) -> None:
    assert size_of(png) == (WIDTH, HEIGHT)
    assert len(png) < MAX_BYTES
    pixels(png).load()  # decodes completely


def test_a_typical_chart_is_a_small_png_of_the_intended_size_with_real_content() -> None:
    png = chart(SIX)
    assert_small_valid_png(png)
    assert colours(png) > 8  # two bar colours, ink, grid and anti-aliased text, not a blank frame
    image = pixels(png)
    plot_area = (170, 40, 600, 270)
    assert count_near(image, NOW_COLOUR, plot_area) > 1000 and count_near(image, BEFORE_COLOUR, plot_area) > 1000


def test_different_data_gives_a_different_image() -> None:
    changed = [SIX[0], StageBar("Qualification", Decimal("1840000"), Decimal("910000")), *SIX[2:]]
    assert chart(SIX) != chart(changed)
    assert pixels(chart(SIX)).tobytes() != pixels(chart(changed)).tobytes()
    assert chart(SIX) != chart(SIX, title="Pipeline by stage, week 24")


def test_the_same_data_gives_the_same_image() -> None:
    assert chart(SIX) == chart(SIX)


def test_last_digest_amounts_add_their_bars_and_a_legend() -> None:
    with_before, now_only = pixels(chart(SIX)), pixels(chart(without_before(SIX)))
    legend = (440, 0, WIDTH, 32)  # top right, beside the title
    assert count_near(with_before, NOW_COLOUR, legend) > 20 and count_near(with_before, BEFORE_COLOUR, legend) > 20
    assert count_near(now_only, NOW_COLOUR, legend) == 0 and count_near(now_only, BEFORE_COLOUR, legend) == 0
    assert count_near(with_before, BEFORE_COLOUR) > 10 * count_near(now_only, BEFORE_COLOUR)  # text edges
    assert with_before.tobytes() != now_only.tobytes()


def test_a_stage_new_since_the_last_digest_needs_no_earlier_amount() -> None:
    mixed = [*SIX[:3], StageBar("Security review", Decimal("42000"), None), *SIX[3:]]
    assert_small_valid_png(chart(mixed))


def test_an_empty_pipeline_still_gives_a_small_valid_png() -> None:
    png = chart([])
    assert_small_valid_png(png)
    assert colours(png) > 2  # the title and "No open deals", not a blank frame
    assert png != chart(without_before(SIX[:1]))


def test_a_long_stage_name_and_a_twelve_stage_pipeline_stay_within_size() -> None:
    long_name = "Commercial and legal review with partner"
    assert len(long_name) == 40
    assert_small_valid_png(chart([StageBar(long_name, Decimal("123456"), Decimal("99000"))]))
    twelve = [StageBar(f"Stage {index} " + "x" * (index * 3), Decimal(10_000 * (index + 1) ** 2),
                       Decimal(9_000 * (index + 2) ** 2)) for index in range(12)]
    twelve[4] = StageBar(long_name, Decimal("7654321"), None)
    png = pipeline_chart(twelve, currency="GBP", title="A very long title " * 8)
    assert_small_valid_png(png)
    assert colours(png) > 8


@pytest.mark.parametrize("bars", [
    [StageBar("Proposal", Decimal(0), Decimal(0))],  # nothing but zeros
    [StageBar("Proposal", Decimal("0.5"), None)],
    [StageBar("Credit note", Decimal("-5000"), Decimal("2500"))],
    [StageBar("Whale", Decimal("3500000000000"), Decimal("1"))],
])
def test_odd_amounts_do_not_break_the_chart(bars: list[StageBar]) -> None:
    assert_small_valid_png(chart(bars))


def test_dollar_signs_and_underscores_are_text_not_mathtext() -> None:
    bars = [StageBar("R&D $ review_$x^", Decimal("1000"), None)]
    assert_small_valid_png(pipeline_chart(bars, currency="USD", title="Deals over $1M_$ {and} 30%"))


def test_charts_can_be_rendered_on_several_threads_at_once() -> None:
    expected = chart(SIX)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: chart(SIX), range(8)))
    assert all(result == expected for result in results)


@pytest.mark.parametrize(("value", "text"), [
    (0, "0"), (12, "12"), (999.6, "1k"), (1000, "1k"), (350_000, "350k"), (620_500, "620.5k"),
    (999_949, "999.9k"), (999_960, "1M"), (1_234_567, "1.2M"), (2_500_000_000, "2.5B"), (-3500, "-3.5k"),
])
def test_amounts_are_compact(value: float, text: str) -> None:
    assert compact(value) == text
