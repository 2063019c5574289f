"""Turn a user's photo or drawing into the 28x28 uint8 image MNIST would have made of it.

MNIST's digits were size-normalised to fit a 20x20 box (aspect ratio kept, antialiased) and then
placed in a 28x28 field with their centre of mass at the centre, as white ink on black. A
network trained on MNIST only works on images prepared the same way, so `lenet5 predict`, the
Python API and the web demo all go through `preprocess_image` here.

Photos and canvas drawings need more than MNIST's recipe: the ink may be dark on light paper,
lit unevenly, on a transparent background, JPEG-blurred, or surrounded by specks. The steps:

1. decode safely (size limits before decoding, EXIF orientation), composite transparency onto
   white, convert to grey, and shrink to at most WORK_SIDE px (JPEGs decode at that scale);
2. on a MODEL_SIDE px copy, judge polarity (against a local median, the heavier tail is ink;
   a clean drawing, mostly paper of one exact grey, against that grey) and model the paper: a
   rank filter gives a first estimate strokes cannot pull up; the pixels it shows to be paper
   are fitted with a cubic surface plus a coarse grid of corrections;
3. subtract the paper and measure the noise robustly (histogram mode, one-sided MAD);
4. find blobs of ink above the noise floor that reach halfway to the darkest ink; keep the
   heaviest and those close and heavy enough to be its other strokes (a 5's bar), drop specks;
   a digit under MIN_DIGIT_SIDE px there is looked for again on the WORK_SIDE copy;
5. ramp [noise floor, ink level] to [0, 1], so the background is exactly 0 and antialiased
   edges stay soft; crop, scale the longer side to 20 px, and paste into 28x28 so the centre of
   mass lands on pixel (14, 14), rounded to whole pixels as MNIST did.

All of it is array and image operations on at most 256x256 pixels, with no per-pixel Python.
"""

from .decode import MAX_FILE_BYTES, MAX_PIXELS, open_image
from .digits import preprocess_image

__all__ = ["MAX_FILE_BYTES", "MAX_PIXELS", "open_image", "preprocess_image"]
