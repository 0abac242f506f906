#!/bin/sh
# galore-serve container entrypoint. First argument picks the role:
#   torchserve (default)  TorchServe in the foreground with the container config and the built-in model archive
#   gateway [ARGS]        the gRPC gateway: python -m galore_gateway ARGS
#   kserve [ARGS]         the KServe host on the built-in archive, all interfaces: python -m galore_kserve ARGS
#   anything else         executed as is (e.g. `bash`, `galore models ...`)
set -eu

config_dir="${GALORE_CONFIG_DIR:-/home/model-server/config}"
role="${1:-torchserve}"
[ "$#" -gt 0 ] && shift

case "$role" in
  torchserve)
    mkdir -p "${LOG_LOCATION:-/tmp/logs}"
    exec torchserve --foreground --ncs \
      --ts-config "$config_dir/config.properties" \
      --log-config "$config_dir/log4j2.xml" \
      "$@"
    ;;
  gateway)
    exec python -m galore_gateway "$@"
    ;;
  kserve)
    exec python -m galore_kserve --archive /home/model-server/model-store/efficientnet_lite0.mar --host 0.0.0.0 \
      --work-dir /tmp/galore-kserve "$@"
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
