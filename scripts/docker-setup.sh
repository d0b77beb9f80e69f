#!/usr/bin/env bash
# Make a local Docker engine usable for reconcile, on a fresh Debian
# machine, idempotently:
#   1. install Debian's docker.io, busybox-static and protobuf-compiler
#      (the etcd client's build needs protoc) when missing, and with
#      `--tests` what the tests use beside them (git, sshd, gpg, wrk,
#      haproxy, prometheus, shells, ...): running the examples needs none
#      of it;
#   2. start dockerd when no daemon answers;
#   3. build the images the examples and tests use, locally: there is no
#      registry to pull from, so `busybox:stable` is imported from a root
#      filesystem holding Debian's static busybox.
# Needs root (apt-get, dockerd). Honours DOCKER_HOST when it points at a
# running daemon.
set -euo pipefail

log() { printf 'docker-setup: %s\n' "$*" >&2; }

tests=false
case "${1:-}" in
    --tests) tests=true ;;
    "") ;;
    *) log "unknown argument \`$1\` (the only one is --tests)"; exit 2 ;;
esac

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx httpd || need_pkgs+=(busybox-static)
# Building reconcile: the etcd client compiles etcd's protocol definitions.
command -v protoc >/dev/null 2>&1 || need_pkgs+=(protobuf-compiler)
if $tests; then
# The multi-node tests put agents in network namespaces.
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
# The webhook test signs its request with an independent HMAC.
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
# Commit signature verification runs ssh-keygen -Y.
command -v ssh-keygen >/dev/null 2>&1 || need_pkgs+=(openssh-client)
# ... and gpg for OpenPGP signatures.
command -v gpg >/dev/null 2>&1 || need_pkgs+=(gnupg)
# tests/git_remotes.rs: git sources over ssh:// (a real sshd and ssh-agent)
# and https:// (git http-backend behind a Python HTTPS server).
{ [ -x /usr/sbin/sshd ] || command -v sshd >/dev/null 2>&1; } || need_pkgs+=(openssh-server)
command -v ssh-agent >/dev/null 2>&1 || need_pkgs+=(openssh-client)
command -v git >/dev/null 2>&1 || need_pkgs+=(git)
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)
# tests/security.rs sends its raw requests over TLS with curl.
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
# Load balancing: tests drive listeners under load with wrk; the listener
# benchmark measures HAProxy beside them.
command -v wrk >/dev/null 2>&1 || need_pkgs+=(wrk)
command -v haproxy >/dev/null 2>&1 || need_pkgs+=(haproxy)
# tests/everyday.rs loads the generated completion scripts in zsh and fish
# and renders a manual page with man.
command -v zsh >/dev/null 2>&1 || need_pkgs+=(zsh)
command -v fish >/dev/null 2>&1 || need_pkgs+=(fish)
command -v man >/dev/null 2>&1 || need_pkgs+=(man-db)
# tests/metrics.rs lints both /metrics with promtool and scrapes them with a
# real Prometheus (Debian's prometheus package ships both).
{ command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; } || need_pkgs+=(prometheus)
# tests/compose_config.rs reads compose files with `docker-compose config`
# beside the compose reader, and the apply benchmark measures compose.
command -v docker-compose >/dev/null 2>&1 || need_pkgs+=(docker-compose)
# The replicated control plane's tests run a real etcd cluster (etcd-server)
# and read its history with etcdctl (etcd-client).
command -v etcd >/dev/null 2>&1 || need_pkgs+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need_pkgs+=(etcd-client)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    if [ -n "${DOCKER_HOST:-}" ]; then
        log "DOCKER_HOST=$DOCKER_HOST does not answer"; exit 1
    fi
    log "starting dockerd"
    mkdir -p /var/log
    # vfs needs no kernel support beyond what any container sandbox has;
    # overlay2 is used when it works.
    driver=overlay2
    if ! (nohup dockerd --storage-driver=overlay2 >/var/log/reconcile-dockerd.log 2>&1 &); then :; fi
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        if ! pgrep -x dockerd >/dev/null; then
            if [ "$driver" = overlay2 ]; then
                log "overlay2 unavailable, falling back to vfs"
                driver=vfs
                (nohup dockerd --storage-driver=vfs >/var/log/reconcile-dockerd.log 2>&1 &)
            else
                tail -20 /var/log/reconcile-dockerd.log >&2; exit 1
            fi
        fi
        sleep 0.5
    done
    docker info >/dev/null 2>&1 || { tail -20 /var/log/reconcile-dockerd.log >&2; exit 1; }
fi

# busybox:stable from Debian's static busybox, with the applet links a
# shell, httpd, wget and sleep need.
if ! docker image inspect busybox:stable >/dev/null 2>&1; then
    log "building busybox:stable from Debian's busybox-static"
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/proc" "$root/sys" "$root/dev" "$root/srv" "$root/var/www"
    cp /bin/busybox "$root/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
    done
    echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
    echo "root:x:0:" > "$root/etc/group"
    tar -C "$root" -c . | docker import \
        --change 'ENV PATH=/bin' \
        --change 'CMD ["/bin/sh"]' \
        - busybox:stable >/dev/null
fi
log "ready: $(docker version --format 'engine {{.Server.Version}}, API {{.Server.APIVersion}}'), storage $(docker info --format '{{.Driver}}')"
