"""Ask the official crds client about a cache; run as a subprocess by the tests.

crds keeps process-wide state (cache mode, loaded contexts, config), so each
question gets a fresh interpreter. The environment says which cache, offline.
Usage: python crds_probe.py OBSERVATORY CONTEXT... ; prints one JSON document.
"""

import json
import os
import sys

from crds.core import config, heavy_client, rmap


def main() -> None:
    observatory, contexts = sys.argv[1], sys.argv[2:]
    answer: dict[str, object] = {
        "operational_context": heavy_client.get_config_info(observatory).operational_context,
        "subdir_mode": config.get_crds_ref_subdir_mode(observatory),
        "contexts": {},
    }
    for name in contexts:
        mapping = rmap.get_cached_mapping(name)
        files = [*mapping.mapping_names(), *mapping.reference_names()]
        answer["contexts"][name] = {
            "mappings": sorted(mapping.mapping_names()),
            "references": sorted(mapping.reference_names()),
            "located": {
                file: config.locate_file(file, observatory)
                for file in files
                if os.environ.get("PROBE_LOCATE") == "1"
            },
        }
    print(json.dumps(answer))


if __name__ == "__main__":
    main()
