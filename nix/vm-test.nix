# The live stack end to end, in a NixOS VM with Docker (x86_64-linux only): load the image
# archives and the postgres/redis stand-ins, `docker compose -f compose/live.yml up`, then
# check through the edge on https://127.0.0.1:8443 a static file and its cache header, /readyz,
# and a task going from the API through Redis and the worker to `done`.
{
  lib,
  pkgs,
  images,
  standins,
  version,
  composeSrc,
  composeSecrets,
}:
let
  archives = [
    images.applayer-archive
    images.httpd-archive
    (images.mkArchive standins.postgres)
    (images.mkArchive standins.redis)
  ];

  # The environment compose/live.yml reads: the image tag and the db/redis images.
  composeEnv = lib.concatStringsSep " " [
    "APP_VERSION=${version}"
    "POSTGRES_IMAGE=${standins.postgres.imageName}:${standins.postgres.imageTag}"
    "REDIS_IMAGE=${standins.redis.imageName}:${standins.redis.imageTag}"
  ];
in
pkgs.testers.runNixOSTest {
  name = "docker-sample-live-stack";

  nodes.machine = {
    virtualisation = {
      docker.enable = true;
      memorySize = 3072;
      diskSize = 8192;
      cores = 2;
    };
    environment.systemPackages = [
      pkgs.curl
      pkgs.docker-compose
      composeSecrets
    ];
  };

  testScript = ''
    import json
    import re

    compose = "cd /root/project && ${composeEnv} docker-compose -f compose/live.yml"
    base = "https://127.0.0.1:8443"
    curl = "curl --cacert /root/project/secrets/tls.crt"

    # docker.socket starts the daemon on first use, whether or not it also starts at boot.
    machine.wait_for_unit("sockets.target")
    for archive in [${lib.concatMapStringsSep ", " (a: ''"${a}"'') archives}]:
        machine.succeed(f"docker load -i {archive}")

    machine.succeed("cp -r ${composeSrc} /root/project && chmod -R u+w /root/project")
    machine.succeed("cd /root/project && ${composeEnv} compose-secrets compose/live.yml")
    machine.succeed(f"{compose} up -d --pull never")

    try:
        machine.wait_until_succeeds(f"{curl} -fsS {base}/readyz", timeout=300)

        # A content-hashed file from `app collectstatic`, served by nginx, cached for a year.
        asset = machine.succeed(
            "find ${images.staticFiles} -regextype posix-extended -regex '.*\\.[0-9a-f]{8}\\.[a-z0-9]+' "
            "-printf '%P\\n' | sort | head -n 1"
        ).strip()
        assert asset, "no content-hashed static file in ${images.staticFiles}"
        headers = machine.succeed(f"{curl} -fsS -o /dev/null -D - {base}/static/{asset}")
        assert re.search(r"(?im)^cache-control: .*max-age=31536000.*immutable", headers), headers

        # A task through nginx, the app, Redis and the worker.
        created = json.loads(machine.succeed(
            f"{curl} -fsS -X POST -H 'Content-Type: application/json' "
            f"-d '{{\"kind\":\"wordcount\",\"payload\":{{\"text\":\"one two two\"}}}}' {base}/api/tasks"
        ))
        task = json.loads(machine.succeed(f"{curl} -fsS '{base}/api/tasks/{created['id']}?wait=20'"))
        assert task["state"] == "done", task
    except Exception:
        print(machine.execute(f"{compose} ps -a; {compose} logs --no-color")[1])
        raise

    machine.succeed(f"{compose} down")
  '';
}
