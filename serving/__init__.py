"""The policy server (serve.py): wire codec in robot_client/protocol.py, schema checks, the micro-batching
inference thread, the WebSocket server. Above policies/; imports no application room."""
