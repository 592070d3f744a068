"""Challenge submission sets: `per_caption` generated images for every caption of a validation list.

    captions = read_caption_list("../shared/data/fashion-products")   # its validation split; or a JSONL of {id, caption}
    summary = generate_submission(pipe, captions, "submission/", per_caption=4, settings=SamplingSettings())
    problems = validate_submission("submission/", captions)                                 # [] = valid

    python -m fashiongen.submission validate submission/ [--captions CAPTIONS] [--split SPLIT]

A set is a folder:
    submission.json    header: the model's fingerprint, the settings, resolution, per_caption, base seed, caption-list hash
    submission.jsonl   one line per finished image: {"file", "caption_id", "caption", "k", "seed"}
    images/ID_K.png    image k (0..per_caption-1) of caption ID, resolution x resolution RGB

Image k of caption ID has the seed `caption_seed(ID, k, base_seed)`, which does not depend on the caption's
position, so shards and resumed runs make the same images. Each PNG is written atomically before its
line is appended, so an interrupted run resumes where it stopped; a folder written by another model or
with other settings is refused, never overwritten. One writer per folder (sample.py holds utils.output_lock).
Every file a set lists must lie inside its folder (utils.file_inside: no absolute paths, no '..', no symlink
out), for the validator and for evaluate.py alike.

The package, by concern: format (names, seeds, the checks writer and validator share), captions (reading caption
lists), writing (generate_submission), validation (validate_submission), command (the validate command).
"""

from .captions import default_split, read_caption_list
from .command import main
from .format import (HEADER_FILE, IMAGES_DIR, LINES_FILE, SUBMISSION_FORMAT, SUBMISSION_VERSION, CaptionItem, SubmissionError,
                     caption_seed, captions_sha256, id_problem, image_name)
from .validation import validate_submission
from .writing import SubmissionSummary, generate_submission

__all__ = ["CaptionItem", "HEADER_FILE", "IMAGES_DIR", "LINES_FILE", "SUBMISSION_FORMAT", "SUBMISSION_VERSION",
           "SubmissionError", "SubmissionSummary", "caption_seed", "captions_sha256", "default_split", "generate_submission",
           "id_problem", "image_name", "main", "read_caption_list", "validate_submission"]
