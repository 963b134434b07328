"""A filter in Python: tags requests with the configured `tag`, refuses user agents containing
`deny`, and tells the client which path its request phase saw (state kept for the response)."""
import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types

LANGUAGE = [("x-filter-lang", "python")]


class WitWorld(wit_world.WitWorld):
    def validate_config(self, config: str) -> None:
        try:
            parsed = json.loads(config)
        except ValueError as error:
            raise Err(f"not JSON: {error}")
        if not isinstance(parsed, dict) or not isinstance(parsed.get("tag"), str):
            raise Err("expected {tag: STRING, deny: STRING}")

    def on_request(self, request: types.Request) -> types.Action:
        config = json.loads(host.config())
        deny = config.get("deny")
        if deny and deny in (request.header("user-agent") or ""):
            host.log(types.LogLevel.INFO, "refusing " + deny)
            return types.Action_Respond(types.ImmediateResponse(403, LANGUAGE, b"denied by python\n"))
        request.set_header("x-python", config["tag"])
        request.set_state(request.path().encode())
        return types.Action_Continue()

    def on_response(self, response: types.Response) -> None:
        response.set_header(*LANGUAGE[0])
        state = response.state()
        if state is not None:
            response.set_header("x-python-path", state.decode())
