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
        common file's (chains of ``extends`` are followed; a list of files
        is merged in order, later files replacing earlier ones' keys).

    Example
    -------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "base.yaml").write_text("a: 1\\nc: 2\\n")
    >>> _ = (d / "m.yaml").write_text("extends: base.yaml\\na: 3\\n")
    >>> print(merged_yaml_text(d / "m.yaml").strip())
    a: 3
    c: 2
    >>> _ = (d / "overlay.yaml").write_text("c: 7\\n")
    >>> _ = (d / "n.yaml").write_text("extends: [m.yaml, overlay.yaml]\\n")
    >>> print(merged_yaml_text(d / "n.yaml").strip())
    a: 3
    c: 7
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"hparams file not found: {path}")
    yaml = ruamel.yaml.YAML()
    with open(path, encoding="utf-8") as f:
        own = yaml.load(f) or {}
    if EXTENDS_KEY not in own:
        return path.read_text(encoding="utf-8")
    bases = own[EXTENDS_KEY]
    # A list merges several files in order (later ones win): a recipe for
    # another corpus reuses a method file and overlays its own common part.
    bases = [bases] if isinstance(bases, str) else list(bases)
    merged = None
    for base in bases:
        base_path = path.parent / base
        if not base_path.is_file():
            raise FileNotFoundError(f"{path} extends {base!r}, which is not found at {base_path}")
        layer = yaml.load(merged_yaml_text(base_path))
        if merged is None:
            merged = layer
        else:
            for key, value in layer.items():
                merged[key] = value
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
