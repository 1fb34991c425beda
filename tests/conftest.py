"""Shared test set-up."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_modal_dialogs(request, monkeypatch):
    """GUI tests (marked ``gui``): dialogs never block; confirm yes, keep edits on close
    (a test overrides these with its own ``monkeypatch`` as needed)."""
    if request.node.get_closest_marker("gui") is None:
        return
    try:
        from napari_sgnet._qt import dialogs
    except ImportError:  # no Qt: the GUI module skips itself
        return

    monkeypatch.setattr(dialogs, "confirm", lambda *a, **k: True)
    monkeypatch.setattr(dialogs, "ask_close", lambda *a, **k: "keep")
