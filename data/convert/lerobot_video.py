"""Camera frames of LeRobot datasets: mp4 decoding and encoding with PyAV, PNG/JPEG cells of parquet.

Decoding matches frames by time, as LeRobot does: row i of an episode is the video frame shown at
`from_timestamp + timestamp[i]`. With the PyAV wheel pinned here (av 18.1.0) AV1 decodes through
libdav1d, and H.264, HEVC and VP9 through FFmpeg's own decoders.

Encoding offers LeRobot's usual lossy codecs and lossless ones. Through this PyAV, libx264rgb at qp=0
(H.264 High 4:4:4, RGB kept as GBR planes, in mp4) returns every pixel exactly; libx264 at qp=0 in
yuv444p does not (the RGB->YUV conversion alone moves pixels by up to 2), and libsvtav1 / libx264 in
yuv420p are lossy as in LeRobot itself.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from data.convert.source import ConvertError

# codec name -> (pixel format, encoder options, lossless?)
VIDEO_CODECS: dict[str, tuple[str, dict[str, str], bool]] = {
    "libx264rgb": ("rgb24", {"qp": "0", "preset": "veryfast"}, True),
    "libsvtav1": ("yuv420p", {"preset": "8", "crf": "30"}, False),  # LeRobot's default
    "libx264": ("yuv420p", {"crf": "18", "preset": "veryfast"}, False),
}


def decode_video(path: Path, times: np.ndarray, fps: float, where: str) -> np.ndarray:
    """The frames shown at `times` (seconds, ascending) as uint8 [len(times), H, W, 3].

    A frame whose time is missing from the file (the video is shorter than the parquet episode, or
    drops frames) is an error that names the file, the key (`where`) and the first missing time."""
    if not path.is_file():
        raise ConvertError(f"{path}: video file missing ({where})")
    times = np.asarray(times, dtype=np.float64)
    tol = 0.4 / fps  # nearest frame within under half a frame period: unambiguous, and no frame skipped
    out: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            if len(times) and times[0] > tol:
                # Jump to the keyframe before the episode, not through every episode before it.
                container.seek(int((times[0] - 2 * tol) / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if len(out) == len(times):
                    break
                if frame.time is None:
                    continue
                t = float(frame.time)
                if t < times[len(out)] - tol:
                    continue
                if t > times[len(out)] + tol:
                    break  # the frame we need was never in the file
                out.append(frame.to_ndarray(format="rgb24"))
    except av.error.FFmpegError as err:
        raise ConvertError(f"{path}: cannot decode video ({where}): {err}") from None
    if len(out) < len(times):
        raise ConvertError(
            f"{path}: video has {len(out)} of the {len(times)} frames its parquet episode needs ({where}); "
            f"no frame at t={times[len(out)]:.4f}s. Re-encode the video or drop the episode")
    return np.stack(out) if out else np.zeros((0, 0, 0, 3), np.uint8)


def decode_image_cells(cells: Iterable[dict | None], root: Path, where: str) -> np.ndarray:
    """Images stored in parquet (Hugging Face `Image` cells: {bytes, path}) as uint8 [N, H, W, 3]."""
    from PIL import Image

    frames = []
    for i, cell in enumerate(cells):
        data = (cell or {}).get("bytes")
        if data is None:
            rel = (cell or {}).get("path")
            if not rel:
                raise ConvertError(f"{where}: row {i} holds neither image bytes nor a path")
            file = Path(rel) if Path(rel).is_absolute() else root / rel
            if not file.is_file():
                raise ConvertError(f"{where}: row {i} points at {file}, which is missing")
            data = file.read_bytes()
        try:
            frames.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
        except OSError as err:
            raise ConvertError(f"{where}: row {i} is not a readable image ({err})") from None
    if len({f.shape for f in frames}) > 1:
        raise ConvertError(f"{where}: images of different sizes {sorted({f.shape for f in frames})}")
    return np.stack(frames)


class VideoWriter:
    """One mp4 of RGB frames at a fixed rate; frame n is shown at n / fps."""

    def __init__(self, path: Path, fps: int, width: int, height: int, codec: str = "libx264rgb") -> None:
        if codec not in VIDEO_CODECS:
            raise ValueError(f"video_codec must be one of {sorted(VIDEO_CODECS)}, got {codec!r}")
        pix_fmt, options, self.lossless = VIDEO_CODECS[codec]
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.codec = path, codec
        self._container = av.open(str(path), "w", format="mp4")
        self._stream = self._container.add_stream(codec, rate=fps, options=dict(options))
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, pix_fmt
        self._stream.time_base = Fraction(1, fps)
        self._stream.codec_context.thread_count = 1
        self.n_frames = 0

    def write(self, frames: np.ndarray) -> None:
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self.n_frames
            self.n_frames += 1
            self._container.mux(self._stream.encode(frame))

    def close(self) -> dict[str, str]:
        """Finish the file; returns LeRobot's video info fields for it (codec and pixel format as read)."""
        self._container.mux(self._stream.encode())
        self._container.close()
        with av.open(str(self.path)) as c:
            ctx = c.streams.video[0].codec_context
            # The codec (e.g. "av1"), not the decoder PyAV picked for it ("libdav1d"), as LeRobot records it.
            return {"video.codec": ctx.codec.canonical_name, "video.pix_fmt": ctx.pix_fmt or ""}
