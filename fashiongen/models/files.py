"""Model files for every generator family: safetensors weights plus model.json, the description that rebuilds them.

    write_model_files(model.state_dict(), info, directory)        # into a folder from replacing_directory(OUT)
    info = read_info("runs/001-small64/export")                     # ModelInfo: the typed view of model.json
    files = read_model_files("runs/001-small64")                   # an export, a checkpoint or a run directory

model.json holds the family (`diffusion`, `superres`, later `gan`), the network's description (no YAML needed),
the family's own settings (diffusion: its noise schedule), the caption encoder's identity (a model trained with one
encoder is useless with another), the attribute vocabulary, training facts, the full config, the sha256 of the
weights and the sha256 of model.json's own canonical content, both checked at load. Which network a description
builds, and its parameter count, is the family's business (fashiongen.families); nothing here needs torch.nn.

Writing never touches what the user did not ask to replace: OUT must be new, empty, or a model folder of ours
(model.json / pipeline.json), `overwrite=True` for anything else, and the package's shipped model only with
`overwrite=True`. A replacement is built in a hidden sibling and swapped in by one atomic rename (RENAME_EXCHANGE
on Linux), so a kill at any point leaves the old folder or the new one; leftovers of a killed write are cleared by
the next write to the same OUT.

Files written by earlier versions still load: format "fashiongen-diffusion" version 1 (no description digest) and 2
(family implied by the network: super-resolution or not); this version writes "fashiongen-model" version 3.

The code lives by concern, and this module re-exports all of it (the import path every caller uses): info.py
(model.json's format, versions, digest and the typed ModelInfo), weights.py (dtypes, sha256, reading weights with the
finite check), writing.py, folders.py (the atomic folder replacement), reading.py (exports, checkpoints, run
directories) and shipped.py (the models inside the package).
"""

from .folders import check_output_dir, replace_directory, replacing_directory, temporary_directory
from .info import (
    CONFIG_SECTIONS,
    DESCRIPTION_DIGEST,
    FAMILIES_WRITTEN,
    INFO_FILE,
    LEGACY_FORMATS,
    MAX_INFO_BYTES,
    MODEL_FORMAT,
    MODEL_VERSION,
    PIPELINE_INFO_FILE,
    WEIGHTS_FILE,
    DataInfo,
    ModelFileError,
    ModelInfo,
    TextInfo,
    WeightsInfo,
    description_digest,
)
from .reading import ModelFiles, find_model_dir, read_info, read_model_files, read_versioned_json
from .shipped import BUNDLED_CRITIC, BUNDLED_GAN, BUNDLED_STUDENT, DEFAULT_MODEL_DIR, PACKAGE_DIR, SHIPPED_MODELS
from .weights import DTYPES, load_weights, sha256_of
from .writing import copy_unchanged, named_files, training_description, write_model_files

__all__ = ["BUNDLED_CRITIC", "BUNDLED_GAN", "BUNDLED_STUDENT", "SHIPPED_MODELS", "DEFAULT_MODEL_DIR", "DTYPES", "DataInfo", "INFO_FILE", "MODEL_FORMAT", "MODEL_VERSION",
           "ModelFileError", "ModelFiles", "ModelInfo", "PIPELINE_INFO_FILE", "TextInfo", "WEIGHTS_FILE", "WeightsInfo",
           "check_output_dir", "copy_unchanged", "description_digest", "find_model_dir", "load_weights", "read_info", "read_model_files",
           "named_files", "read_versioned_json", "replacing_directory", "sha256_of", "write_model_files"]
