"""Modal questions and file dialogs, in one place so tests can answer them.

Every function takes the parent widget first and returns plain Python values; the
GUI tests monkeypatch them instead of clicking through native dialogs.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QFileDialog, QMessageBox, QWidget

__all__ = ["ask_close", "ask_directory", "ask_open_file", "ask_save_path", "confirm"]


def confirm(parent: QWidget | None, title: str, text: str, *, ok: str = "OK") -> bool:
    """Ask a yes/no question; True when the person accepts."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Question)
    box.setWindowTitle(title)
    box.setText(text)
    accept = box.addButton(ok, QMessageBox.AcceptRole)
    box.addButton(QMessageBox.Cancel)
    box.setDefaultButton(QMessageBox.Cancel)
    box.exec_()
    return box.clickedButton() is accept


def ask_close(parent: QWidget | None, pixels: int) -> str:
    """Closing with an uncommitted edit: ``"commit"``, ``"keep"`` or ``"cancel"``."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Warning)
    box.setWindowTitle("Uncommitted edit")
    box.setText(f"You have an uncommitted edit ({pixels:,} pixels changed).")
    box.setInformativeText(
        "Commit it to the label store now, or keep it for later (it is autosaved and "
        "reopens with this slide)?"
    )
    commit = box.addButton("Commit", QMessageBox.AcceptRole)
    keep = box.addButton("Keep for later", QMessageBox.DestructiveRole)
    box.addButton(QMessageBox.Cancel)
    box.setDefaultButton(commit)
    box.exec_()
    clicked = box.clickedButton()
    if clicked is commit:
        return "commit"
    if clicked is keep:
        return "keep"
    return "cancel"


def ask_save_path(parent: QWidget | None, title: str, start: Path, filters: str) -> Path | None:
    """A path to write, or ``None`` when cancelled."""
    path, _ = QFileDialog.getSaveFileName(parent, title, str(start), filters)
    return Path(path) if path else None


def ask_directory(parent: QWidget | None, title: str, start: Path) -> Path | None:
    """An existing folder, or ``None`` when cancelled."""
    path = QFileDialog.getExistingDirectory(parent, title, str(start))
    return Path(path) if path else None


def ask_open_file(parent: QWidget | None, title: str, start: Path, filters: str) -> Path | None:
    """A file to read, or ``None`` when cancelled."""
    path, _ = QFileDialog.getOpenFileName(parent, title, str(start), filters)
    return Path(path) if path else None
