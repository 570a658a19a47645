"""Reads the scalars of TensorBoard event files (TFRecord framing + tensorboardX's Event proto)."""

import glob
import os
import struct

from tensorboardX.proto import event_pb2


def read_events(directory: str) -> list:
  """Every Event of the ``events.out.tfevents.*`` files in ``directory``, in file order."""
  events = []
  for path in sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      data = f.read()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack("<Q", data[offset : offset + 8])
      events.append(event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length]))
      offset += 12 + length + 4
  return events


def read_scalars(directory: str) -> dict:
  """``{tag: [(step, value), ...]}`` over every event file in ``directory``."""
  scalars = {}
  for event in read_events(directory):
    for value in event.summary.value:
      scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
  return scalars
