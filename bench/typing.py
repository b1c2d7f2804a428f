"""`python bench/typing.py`: typing real code through the real language server (see typing_replay.py).

This file's name is the standard library's `typing`: a script in bench/ that imports `typing` (bench/ is
first on its sys.path) gets this file, which hands the standard module over at once.
"""

import sys

if __name__ != "__main__":
    import importlib.util
    import os
    import sysconfig

    _spec = importlib.util.spec_from_file_location("typing", os.path.join(sysconfig.get_paths()["stdlib"], "typing.py"))
    assert _spec is not None and _spec.loader is not None
    _std = importlib.util.module_from_spec(_spec)
    sys.modules["typing"] = _std  # the importer receives this module, not this file
    _spec.loader.exec_module(_std)
else:
    from typing_replay import main

    main()
