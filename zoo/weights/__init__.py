"""Pretrained weights: resolve a NAME or PATH to a verified local file and load it.

A plugin's weights table (`Plugin.weights`, `zoo.plugin.Weights`) is data: a name such
as `DIGITS_V1`, a source, the file's sha256 and a meta dict whose schema is `META_FIELDS`
(checked by `validate_entry`). Sources:

- `package:<file>`: shipped beside the plugin's module, in its `weights/` directory
  (`zoo/plugins/weights/` for the built-ins); used in place, hashed before use.
- `https://`, `http://`, `file://` URLs: downloaded once into
  `$ZOO_HOME/weights/<plugin>/`, streamed into a temp file there, checked against the
  sha256 and only then renamed into place. A cached file is re-verified before every
  use (a sidecar records size, mtime, ctime and inode, so an unchanged file is not
  hashed twice); a corrupt one is downloaded again. `ZOO_OFFLINE=1` never touches the
  network; `ZOO_DOWNLOAD_TIMEOUT` (seconds, default 30) bounds every network wait.
- entries made by `zoo weights import` live in the same cache, listed in its
  `imported.json` with their sha256, and resolve by name like table entries.

Publishing weights (a team's own, or entries too large to ship, such as pix2pix's):
`zoo weights export PLUGIN --checkpoint RUN -o DIR [--components generator]
[--base-url https://host/path]` writes `PLUGIN-NAME-<sha256[:8]>.safetensors` and prints
the `Weights(...)` entry; upload the file to the URL, paste the entry into the plugin's
`weights=(...)` (and `default_weights=`), and `zoo weights download PLUGIN NAME` fetches
and verifies it from then on. Without `--base-url` the source is `package:<file>`: put
the file in the plugin's `weights/` directory and its package data.

Files are safetensors whose metadata holds the zoo meta as JSON under "zoo" (plugin,
config, components, ...). Their floating-point tensors may be stored in float16 or
bfloat16 (`zoo weights export --dtype`, recorded as the meta's 'stored_dtype'); loading
casts every tensor to the dtype of the model's own. zoo training checkpoints
(`last.pt`) and foreign state dicts (`.pth`, a plain dict of tensors) are read with
`torch.load(weights_only=True)`, so a pickle that would run code is refused. Foreign
layouts go through the plugin's `checkpoint_filter`. Loading is strict per component:
weights may hold only some top-level children of the model (a GAN's generator),
declared in the meta as `components`; every key of those must be present and match,
the rest stay as built. torch is imported inside functions only.

The modules, each one step of that way, in the order they depend on each other:

- `hashing`: sha256 once per process, sidecars for cached files;
- `download`: HTTP with timeouts, offline mode, verified or nothing;
- `entries`: the table and imported entries, NAME|PATH -> verified local file, status;
- `reading`: a file -> `LoadedWeights` (state dict, config, meta) without pickled code;
- `loading`: `load_into` a built model per component, `check_architecture`;
- `meta`: the table entry schema (`validate_entry`), `input_spec`, `train_command`;
- `publish`: deterministic safetensors bytes at a stored dtype, the file name and the
  `Weights(...)` source to paste.

Building a ready model from weights is `zoo.models.build_model`'s job; this package
only finds, reads and loads them.
"""

from zoo.weights.download import DEFAULT_TIMEOUT_S, ENV_OFFLINE, ENV_TIMEOUT, DownloadError, download, download_timeout, offline
from zoo.weights.entries import (
    IMPORT_NAME,
    IMPORTED_INDEX,
    SOURCE_SCHEMES,
    SUFFIXES,
    all_entries,
    cache_dir,
    cache_file_name,
    fetch,
    find_entry,
    imported_entries,
    local_path,
    package_file,
    resolve,
    status,
)
from zoo.weights.hashing import file_sha256, remove_verified, sidecar, verified_sha256
from zoo.weights.loading import (
    check_architecture,
    component_tensors,
    load_into,
    meta_model,
    num_params,
    to_model_dtypes,
    top_level_children,
)
from zoo.weights.meta import (
    META_FIELDS,
    OPTIONAL_META_FIELDS,
    SHA256,
    STORED_DTYPES,
    TABLE_NAME,
    input_spec,
    parse_train_command,
    train_command,
    validate_entry,
    validate_meta,
)
from zoo.weights.publish import entry_source, file_name, safetensors_bytes, stored_at, stored_dtype, write_verified
from zoo.weights.reading import LoadedWeights, read, torch_load_safely

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "ENV_OFFLINE",
    "ENV_TIMEOUT",
    "IMPORTED_INDEX",
    "IMPORT_NAME",
    "META_FIELDS",
    "OPTIONAL_META_FIELDS",
    "SHA256",
    "STORED_DTYPES",
    "SOURCE_SCHEMES",
    "SUFFIXES",
    "TABLE_NAME",
    "DownloadError",
    "LoadedWeights",
    "all_entries",
    "cache_dir",
    "cache_file_name",
    "check_architecture",
    "component_tensors",
    "download",
    "download_timeout",
    "entry_source",
    "fetch",
    "file_name",
    "file_sha256",
    "find_entry",
    "imported_entries",
    "input_spec",
    "load_into",
    "local_path",
    "meta_model",
    "num_params",
    "offline",
    "package_file",
    "parse_train_command",
    "read",
    "remove_verified",
    "resolve",
    "safetensors_bytes",
    "sidecar",
    "status",
    "stored_at",
    "stored_dtype",
    "to_model_dtypes",
    "top_level_children",
    "torch_load_safely",
    "train_command",
    "validate_entry",
    "validate_meta",
    "verified_sha256",
    "write_verified",
]
