"""Recipe YAML files that share a common part.

Every KD method has its own small YAML (``hparams/kd_ecapa.yaml``,
``hparams/imlkd_ecapa.yaml``, ...) that names the shared part with a
top-level key ``extends: kd_common.yaml``. The method file's top-level keys
replace the common file's, then the merged text is loaded with hyperpyyaml
(``!new:``, ``!ref``, ``!name:`` resolve across both) and the command-line
overrides apply as usual. hyperpyyaml's own ``!include:`` only nests a file
under a key, which would hide the shared knobs from command-line overrides.

Example
-------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "base.yaml").write_text("a: 1\\nb: !ref <a>\\n")
>>> _ = (d / "m.yaml").write_text("extends: base.yaml\\na: 5\\n")
>>> hp = load_recipe_hparams(d / "m.yaml")
>>> hp["b"]
5
"""

import io
from pathlib import Path

import ruamel.yaml
from hyperpyyaml import load_hyperpyyaml

EXTENDS_KEY = "extends"


def merged_yaml_text(path):
    """Returns the YAML text of ``path`` merged over the file it extends.

    Arguments
    ---------
    path : str or Path
        The method YAML file.

    Returns
    -------
    str
        A YAML document where the method's top-level keys replace the
        common file's (chains of ``extends`` are followed).

    Example
    -------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "base.yaml").write_text("a: 1\\nc: 2\\n")
    >>> _ = (d / "m.yaml").write_text("extends: base.yaml\\na: 3\\n")
    >>> print(merged_yaml_text(d / "m.yaml").strip())
    a: 3
    c: 2
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"hparams file not found: {path}")
    yaml = ruamel.yaml.YAML()
    with open(path, encoding="utf-8") as f:
        own = yaml.load(f) or {}
    if EXTENDS_KEY not in own:
        return path.read_text(encoding="utf-8")
    base_path = path.parent / own[EXTENDS_KEY]
    if not base_path.is_file():
        raise FileNotFoundError(
            f"{path} extends {own[EXTENDS_KEY]!r}, which is not found at {base_path}"
        )
    merged = yaml.load(merged_yaml_text(base_path))
    for key, value in own.items():
        if key != EXTENDS_KEY:
            merged[key] = value
    out = io.StringIO()
    yaml.dump(merged, out)
    return out.getvalue()


def load_recipe_hparams(path, overrides=None):
    """Loads a recipe YAML, following ``extends``, with overrides.

    Arguments
    ---------
    path : str or Path
        The YAML file.
    overrides : dict or str, optional
        Overrides, as given by ``speechbrain.parse_arguments``.

    Returns
    -------
    dict
        The loaded hyperparameters.

    Example
    -------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "base.yaml").write_text("x: 2\\ny: !ref <x> * 3\\n")
    >>> _ = (d / "m.yaml").write_text("extends: base.yaml\\n")
    >>> load_recipe_hparams(d / "m.yaml", {"x": 4})["y"]
    12
    """
    return load_hyperpyyaml(merged_yaml_text(path), overrides or {})
