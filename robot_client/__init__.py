"""The robot side of the policy server (serve.py): imports numpy, msgpack and websockets only, so it
installs on a robot's computer without torch. See docs/deploy.md."""

from robot_client.client import PolicyClient, ServerError, ServerUnavailable
from robot_client.protocol import PROTOCOL_VERSION, ProtocolError
from robot_client.scheduler import ActionScheduler
from robot_client.transitions import TRANSITIONS, ActionQueue

__all__ = ["PROTOCOL_VERSION", "TRANSITIONS", "ActionQueue", "ActionScheduler", "PolicyClient", "ProtocolError",
           "ServerError", "ServerUnavailable"]
