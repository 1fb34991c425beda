"""The Qt-free app core: evented state, viewport maths, review session, store paths, exports.

Everything the dock widgets do is a call into this package, which the CLI and the tests
call too. Nothing here imports napari or Qt.
"""
