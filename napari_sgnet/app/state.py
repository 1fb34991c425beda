"""The app state: one evented, Qt-free object per viewer that every dock widget is handed.

:class:`AppState` holds what the widgets share: the current model, the device, the slide
(and its layer's world transform), where its label store is, the review session, the
palette, the inference runs (:class:`~napari_sgnet.app.runs.ViewportRuns`) and the
fine-tuned model on offer. Widgets change it through its methods and observe
:attr:`AppState.events` (psygnal signals, napari's own event library); no widget finds or
signals another. :func:`state_for` gives each viewer its own state (kept in a weak
dictionary, so it goes with the viewer).

Several slides can share one viewer: the state keeps what belongs to a slide (its pyramid,
transform, review session and out-of-distribution checks) in a :class:`SlideContext` per slide,
keyed by whatever the caller names the slide by (the dock uses the slide layer's unique id).
:meth:`AppState.set_slide` with a key seen before restores that slide's context.

State changes are made on the main thread; listeners run synchronously, in the thread that
made the change.
"""

from __future__ import annotations

import logging
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psygnal import Signal, SignalGroup

from napari_sgnet.app.models import ModelChoice, choose_model
from napari_sgnet.app.review import ReviewSession
from napari_sgnet.app.runs import ViewportRuns
from napari_sgnet.app.store_paths import find_store_path
from napari_sgnet.errors import UserInputError
from napari_sgnet.inference.ood import OODResult
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.palette import GLEASON, Palette

__all__ = ["AppState", "AppStateEvents", "SlideContext", "open_review_session", "state_for"]

log = logging.getLogger(__name__)

Transform = tuple[tuple[float, float], tuple[float, float]]


class AppStateEvents(SignalGroup):
    """The events of an :class:`AppState`; each carries the new value."""

    model = Signal(object)
    """The current model changed (a :class:`~napari_sgnet.app.models.ModelChoice`)."""
    model_error = Signal(str)
    """A model could not be chosen (the message names the file); the model is now ``None``."""
    device = Signal(str)
    """The device for the next runs changed."""
    slide = Signal(object)
    """Another slide (a :class:`~napari_sgnet.io.pyramid.Pyramid`, or ``None``)."""
    store = Signal(object)
    """The label store path of the slide changed (a ``Path``, or ``None``)."""
    session = Signal(object)
    """The review session changed (a :class:`~napari_sgnet.app.review.ReviewSession`, or
    ``None``)."""
    palette = Signal(object)
    """The class palette changed (a :class:`~napari_sgnet.palette.Palette`)."""
    offered = Signal(object)
    """A fine-tuned model is on offer (its checkpoint ``Path``), or no longer (``None``)."""
    ood = Signal(object)
    """The out-of-distribution check changed: an
    :class:`~napari_sgnet.inference.ood.OODResult` (its ``scope`` says of what), or ``None``
    when the slide or the model changed and nothing is judged yet."""


@dataclass(eq=False)
class SlideContext:
    """What belongs to one slide of the viewer: kept while another slide is reviewed.

    Attributes
    ----------
    slide : Pyramid
        The slide.
    transform : tuple
        Its layer's world ``(scale, translate)``.
    session : ReviewSession or None
        Its review session (``None`` until its label store exists and is open).
    ood : dict
        Its out-of-distribution checks by scope (``"slide"``, ``"region"``).
    """

    slide: Pyramid
    transform: Transform
    session: ReviewSession | None = None
    ood: dict[str, OODResult] = field(default_factory=dict)


class AppState:
    """What the napari-sgnet widgets of one viewer share.

    Parameters
    ----------
    store_dir : str or Path, optional
        Folder for label stores (default: see :mod:`napari_sgnet.app.store_paths`).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    """

    def __init__(self, *, store_dir: str | os.PathLike[str] | None = None,
                 device: str = "auto") -> None:
        self.events = AppStateEvents()
        self.runs = ViewportRuns()
        self._model: ModelChoice | None = None
        self._model_source: Any = None
        self._model_error = ""
        self._device = device
        self._slide: Pyramid | None = None
        self._transform: Transform = ((1.0, 1.0), (0.0, 0.0))
        self._store_dir = Path(store_dir) if store_dir is not None else None
        self._session: ReviewSession | None = None
        self._palette: Palette = GLEASON
        self._user_palette = False
        self._offered: Path | None = None
        self._ood: dict[str, OODResult] = {}
        self._slide_key: Any = None
        self._contexts: dict[Any, SlideContext] = {}

    # ------------------------------------------------------------------ model
    @property
    def model(self) -> ModelChoice | None:
        """The model new runs use (``None`` until one is chosen, or after a bad choice)."""
        return self._model

    @property
    def model_source(self) -> Any:
        """What the current model was chosen from (``None``, a path, a predictor)."""
        return self._model_source

    @property
    def model_error(self) -> str:
        """Why the last choice of model failed (``""`` when it did not)."""
        return self._model_error

    def set_model(self, source: Any = None, *, choice: ModelChoice | None = None) -> bool:
        """Choose the model for new runs: ``None`` (bundled), a checkpoint folder or a predictor.

        Emits ``model`` (and ``palette`` when the palette follows the model), or
        ``model_error`` when the model cannot be described; returns whether it worked.
        ``choice`` is ``choose_model(source)`` when the caller already described it (the
        dock does, on a worker: describing a checkpoint reads its weights for the digest).
        """
        try:
            if choice is None:
                choice = choose_model(source)
        except UserInputError as exc:
            self.set_model_error(str(exc))
            return False
        self._model, self._model_source, self._model_error = choice, source, ""
        self.runs.invalidate()
        self._clear_ood()
        if not self._user_palette:
            self.set_palette(choice.info.palette, user=False)
        self.events.model.emit(choice)
        return True

    def set_model_error(self, message: str) -> None:
        """The chosen model cannot be used (``message`` says why): no model until another."""
        self._model, self._model_source, self._model_error = None, None, str(message)
        self.runs.invalidate()
        self.events.model_error.emit(self._model_error)

    # ------------------------------------------------------------------ device
    @property
    def device(self) -> str:
        """Where the next runs go."""
        return self._device

    def set_device(self, device: str) -> None:
        """Run on ``device`` from the next run on (emits ``device``)."""
        self._device = str(device)
        self.runs.invalidate()
        self.events.device.emit(self._device)

    # ------------------------------------------------------------------ slide and store
    @property
    def slide(self) -> Pyramid | None:
        """The slide being reviewed."""
        return self._slide

    @property
    def slide_transform(self) -> Transform:
        """World ``(scale, translate)`` of the slide layer's ``(y, x)`` axes."""
        return self._transform

    @property
    def slide_key(self) -> Any:
        """What the current slide was keyed by in :meth:`set_slide` (``None``: no key)."""
        return self._slide_key

    def set_slide(self, slide: Pyramid | None, *, scale: tuple[float, float] | None = None,
                  translate: tuple[float, float] = (0.0, 0.0), key: Any = None) -> None:
        """Review ``slide`` (shown with ``scale`` / ``translate``).

        The current slide's session and checks are kept under its key; with a ``key`` seen
        before (and the same slide) that slide's session and checks come back, otherwise the
        slide starts without a session. Emits ``session`` (when it changes), ``slide``,
        ``store`` and ``ood`` (when the checks change).
        """
        self._save_context()
        context = self._contexts.get(key) if key is not None else None
        if context is not None and context.slide is not slide:
            context = None
        if scale is None:
            mpp = slide.mpp if slide is not None and slide.mpp is not None else 1.0
            scale = (mpp, mpp)
        self._slide = slide
        self._slide_key = key
        self._transform = ((float(scale[0]), float(scale[1])),
                           (float(translate[0]), float(translate[1])))
        self.runs.invalidate()
        session = context.session if context is not None else None
        ood = dict(context.ood) if context is not None else {}
        if ood != self._ood:
            self._ood = ood
            self.events.ood.emit(None)
            for result in ood.values():
                self.events.ood.emit(result)
        if session is not self._session:
            self._session = session
            self.events.session.emit(session)
        self.events.slide.emit(slide)
        self.events.store.emit(self.store_path)

    def _save_context(self) -> None:
        if self._slide is not None and self._slide_key is not None:
            self._contexts[self._slide_key] = SlideContext(
                self._slide, self._transform, self._session, dict(self._ood))

    def forget_slide(self, key: Any) -> None:
        """Drop what was kept for the slide keyed ``key`` (its layer left the viewer).

        The current slide is not changed by this (call :meth:`set_slide` for that).
        """
        self._contexts.pop(key, None)

    def context(self, key: Any) -> SlideContext | None:
        """What is kept for the slide keyed ``key`` (the current one's is up to date)."""
        if key is not None and key == self._slide_key and self._slide is not None:
            return SlideContext(self._slide, self._transform, self._session, dict(self._ood))
        return self._contexts.get(key)

    def keep_session(self, session: ReviewSession) -> bool:
        """Keep ``session`` with the (not current) slide it was opened for, if that has none.

        For a store that finished opening after the person switched to another slide.
        Returns whether it was kept.
        """
        for ctx in self._contexts.values():
            if ctx.slide is session.slide and ctx.session is None:
                ctx.session = session
                return True
        return False

    def sessions(self) -> list[ReviewSession]:
        """The open review sessions of every slide of the viewer (the current one first)."""
        out = [self._session] if self._session is not None else []
        for key, ctx in self._contexts.items():
            if key != self._slide_key and ctx.session is not None and ctx.session not in out:
                out.append(ctx.session)
        return out

    @property
    def store_dir(self) -> Path | None:
        """The folder for label stores (``None``: the default rule)."""
        return self._store_dir

    def set_store_dir(self, folder: str | os.PathLike[str] | None) -> None:
        """Keep label stores in ``folder`` (emits ``store``)."""
        self._store_dir = Path(folder) if folder is not None else None
        self.events.store.emit(self.store_path)

    @property
    def store_path(self) -> Path | None:
        """The open session's store, else the store the slide's runs go to (may not exist)."""
        if self._session is not None:
            return Path(self._session.store.path)
        if self._slide is None:
            return None
        return find_store_path(self._slide, self._store_dir)

    # ------------------------------------------------------------------ session
    @property
    def session(self) -> ReviewSession | None:
        """The review session of the slide's store (``None`` before the store exists)."""
        return self._session

    def set_session(self, session: ReviewSession | None) -> None:
        """Review ``session`` (emits ``session`` and ``store``)."""
        self._session = session
        self.events.session.emit(session)
        self.events.store.emit(self.store_path)

    # ------------------------------------------------------------------ palette
    @property
    def palette(self) -> Palette:
        """The class names and colours the layers show."""
        return self._palette

    @property
    def user_palette(self) -> bool:
        """True when the person loaded the palette (a new model then keeps it)."""
        return self._user_palette

    def set_palette(self, palette: Palette, *, user: bool = True) -> None:
        """Show ``palette``; ``user=False`` for the model's own (emits ``palette``)."""
        self._palette, self._user_palette = palette, bool(user)
        self.events.palette.emit(palette)

    # ------------------------------------------------------------------ out of distribution
    @property
    def ood_slide(self) -> OODResult | None:
        """The per-slide out-of-distribution check of the slide and model (``None``: not yet)."""
        return self._ood.get("slide")

    @property
    def ood_view(self) -> OODResult | None:
        """The check of the tiles the latest run on a region (a view) predicted."""
        return self._ood.get("region")

    def _clear_ood(self) -> None:
        if self._ood:
            self._ood = {}
            self.events.ood.emit(None)

    def check_slide_ood(self) -> tuple[Any, Any, OODResult | None]:
        """Judge the slide with the model (slow: call it on a worker thread).

        Returns ``(slide, model, result)`` as they were at the call, for :meth:`set_ood`;
        ``result`` is ``None`` without a slide or a model.
        """
        from napari_sgnet.inference.ood_check import check_slide

        slide, model = self._slide, self._model
        if slide is None or model is None:
            return slide, model, None
        return slide, model, check_slide(slide, model.request_model, device=self._device)

    def set_ood(self, result: OODResult | None, *, slide: Any = None, model: Any = None) -> bool:
        """Record a check (emits ``ood``); ignored when it was made for another slide or model
        (``slide`` / ``model`` as returned by :meth:`check_slide_ood`). Returns whether kept."""
        if result is None or (slide is not None and slide is not self._slide) or (
            model is not None and model is not self._model
        ):
            return False
        self._ood[result.scope if result.scope == "region" else "slide"] = result
        self.events.ood.emit(result)
        return True

    def note_run_event(self, event: Any) -> bool:
        """Record the check carried by a run's progress event, when it judged tiles."""
        result = getattr(event, "ood", None)
        if not isinstance(result, OODResult) or result.tiles == 0:
            return False
        return self.set_ood(result)

    # ------------------------------------------------------------------ fine-tuned model
    @property
    def offered(self) -> Path | None:
        """The fine-tuned model on offer, not in use until :meth:`use_offered`."""
        return self._offered

    def offer_model(self, checkpoint: str | os.PathLike[str] | None) -> None:
        """Offer a fine-tuned model to the person (emits ``offered``); nothing is swapped in."""
        self._offered = Path(checkpoint) if checkpoint is not None else None
        self.events.offered.emit(self._offered)

    def use_offered(self) -> bool:
        """Make the offered model the current one (the person asked); False when none."""
        path = self._offered
        if path is None or not self.set_model(path):
            return False
        self.offer_model(None)
        return True


def open_review_session(slide: Pyramid, path: str | os.PathLike[str], *,
                        transform: Transform | None = None, check: bool = True) -> ReviewSession:
    """Open a slide's label store and its review state (slow: call it on a worker thread).

    Parameters
    ----------
    slide : Pyramid
        The slide.
    path : str or Path
        Its label store (it must exist).
    transform : tuple, optional
        The slide layer's world ``(scale, translate)``.
    check : bool
        Verify the store belongs to the slide (reads a window of the slide).

    Raises
    ------
    StoreError
        When the store is missing, invalid or made for another slide.
    """
    store = LabelStore.open(Path(path), slide=slide) if check else LabelStore.open(Path(path))
    scale, translate = transform if transform is not None else (None, (0.0, 0.0))
    return ReviewSession(slide, store, slide_scale=scale, slide_translate=translate)


_STATES: weakref.WeakKeyDictionary[Any, AppState] = weakref.WeakKeyDictionary()


def state_for(viewer: Any, **kwargs: Any) -> AppState:
    """The :class:`AppState` of ``viewer``, created on first use (``kwargs`` then apply).

    Every dock widget of one viewer gets the same state; another viewer gets its own. The
    state lives as long as the viewer.
    """
    state = _STATES.get(viewer)
    if state is None:
        state = _STATES[viewer] = AppState(**kwargs)
    return state
