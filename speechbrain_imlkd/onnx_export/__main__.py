"""``python -m speechbrain_imlkd.onnx_export FOLDER``: see :func:`main`.

Authors
 * speechbrain-imlkd contributors 2025
"""

from speechbrain_imlkd.onnx_export.cli import main

if __name__ == "__main__":
    main()
