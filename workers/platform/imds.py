"""The Instance Metadata Service (protocol.md §1.16): compute metadata for telemetry fields,
and the health probe. `Metadata: true`, never proxied, at `Protocol.ImdsEndpoint`.
"""

import json
from typing import Optional

from workers.platform.endpoint import Endpoint
from workers.platform.errors import DocumentError, HttpError
from workers.platform.http import HttpClient
from workers.platform.identity import USER_AGENT_HEALTH

COMPUTE_PATH = "/metadata/instance/compute?api-version=2018-02-01"
HEALTH_PATH = "/metadata/instance?api-version=2018-02-01"
MAX_IMDS_BYTES = 1024 * 1024


class ImdsClient:
    def __init__(self, http: HttpClient, endpoint: Endpoint):
        self.http = http
        self.endpoint = endpoint

    def compute(self) -> dict:
        body = self.http.request("GET", self.endpoint.base_url + COMPUTE_PATH,
                                 headers={"Metadata": "true"}, max_bytes=MAX_IMDS_BYTES).body
        try:
            doc = json.loads(body.decode("utf-8-sig"))
        except ValueError:
            raise DocumentError("IMDS compute", "not JSON") from None
        if not isinstance(doc, dict):
            raise DocumentError("IMDS compute", "not a JSON object")
        return doc

    def healthy(self) -> bool:
        try:
            self.http.request("GET", self.endpoint.base_url + HEALTH_PATH,
                              headers={"Metadata": "true", "User-Agent": USER_AGENT_HEALTH},
                              policy=self.http.policy(attempts=1), max_bytes=MAX_IMDS_BYTES)
            return True
        except HttpError:
            return False


def endpoint_from_config(config) -> Optional[Endpoint]:
    value = config["Protocol.ImdsEndpoint"]
    return Endpoint.parse(value) if value else None
