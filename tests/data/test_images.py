import numpy as np
import pytest
from tests.media import sector_frame, write_image

from sonosynth.data.crop import content_box, to_square
from sonosynth.data.images import UnreadableImage, load_grayscale


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "I;16", "P"])
def test_every_mode_becomes_8bit_grayscale(tmp_path, mode):
    image = load_grayscale(write_image(tmp_path / f"x{mode.replace(';', '')}.png", mode))
    assert image.dtype == np.uint8 and image.shape == (60, 90)
    assert image.max() > 100  # 12-bit data stored in 16 bits must be rescaled, not shown nearly black
    if mode == "RGBA":
        assert image[:, :20].max() == 0  # transparent pixels are background, i.e. black


def test_corrupt_and_truncated_images_raise_unreadable(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"definitely not a png")
    with pytest.raises(UnreadableImage):
        load_grayscale(tmp_path / "junk.png")
    good = write_image(tmp_path / "t.jpg", "L", size=(200, 200)).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(good[: len(good) // 3])
    with pytest.raises(UnreadableImage):
        load_grayscale(tmp_path / "cut.jpg")


def test_content_box_finds_the_sector_and_drops_the_overlay():
    frame = sector_frame((120, 150))
    box = content_box(frame)
    assert abs(box.top - 20) <= 3 and abs(box.bottom - 100) <= 3
    assert abs(box.left - 30) <= 3 and abs(box.right - 120) <= 3


def test_content_box_of_a_blank_image_is_the_whole_image():
    assert content_box(np.zeros((40, 50), np.uint8)).height == 40


def test_to_square_pads_without_cutting_and_resizes():
    wide = np.full((50, 100), 200, np.uint8)
    square = to_square(wide, 64)
    assert square.shape == (64, 64)
    assert square[0].max() < 30 and square[32].min() > 150  # black bands top and bottom, content kept
