"""Benchmark: the Storage daemon (through the database) against bare boto3 / paramiko loops.

Each target runs in its own process on loopback: moto's S3 server (``moto[server]``) and an
asyncssh SFTP server (the test suite's). The raw limits, measured in the same run with the same
documents, are a bare ``put_object`` loop on one boto3 client and a bare ``putfo`` loop on one
paramiko SFTP session. The pipeline is the Storage daemon in ``once`` mode: it claims
unstored documents, writes each under ``YYYY/MM/DD/HH/<id>.<ext>`` (S3: with metadata) and
records backend, location and time on every document row.

    .venv/bin/python bench/storage.py [--n 500] [--size 30000] [--backend sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, insert, select

from bench.common import fresh_database, peak_rss_mb, row, timer
from comms_pipeline.core.clock import utcnow
from comms_pipeline.daemons.storage import StorageDaemon
from comms_pipeline.pipeline.admin_records import add_contact
from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.queue.runner import Runner
from comms_pipeline.settings.config import load_settings
from comms_pipeline.store.db import make_engine, upgrade
from comms_pipeline.store.models import details_t, documents_t

KEY_ID, SECRET = "bench-key", "bench-secret"


# -- servers (child processes) ---------------------------------------------------------------
def start_moto(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto server did not start")


def serve_sftp(root: str, known_hosts: str, port_box, ready, stop) -> None:  # type: ignore[no-untyped-def]
    from tests.servers.sftp import SftpServer

    server = SftpServer(Path(root)).start()
    server.write_known_hosts(Path(known_hosts))
    port_box.value = server.port
    ready.set()
    stop.wait()
    server.stop()


# -- raw loops -------------------------------------------------------------------------------
def s3_client(endpoint: str):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.session.Session(aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                                 region_name="us-east-1").client("s3", endpoint_url=endpoint)


def raw_s3(endpoint: str, bucket: str, docs: list[bytes]) -> float:
    client = s3_client(endpoint)
    with timer() as took:
        for i, data in enumerate(docs):
            client.put_object(Bucket=bucket, Key=f"raw/2026/01/01/00/{i}.pdf", Body=data)
    client.close()
    return took[0]


def raw_sftp(port: int, known_hosts: str, docs: list[bytes], run: int) -> float:
    import paramiko

    from tests.servers.sftp import PASSWORD, USER

    with timer() as took:
        client = paramiko.SSHClient()
        client.load_host_keys(known_hosts)
        client.connect("127.0.0.1", port=port, username=USER, password=PASSWORD,
                       look_for_keys=False, allow_agent=False)
        sftp = client.open_sftp()
        folder = f"/raw{run}"
        sftp.mkdir(folder)
        for i, data in enumerate(docs):
            sftp.putfo(io.BytesIO(data), f"{folder}/{i}.pdf", file_size=len(data))
        client.close()
    return took[0]


# -- the pipeline ----------------------------------------------------------------------------
def seed(engine, docs: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        contact_id = add_contact(conn, "C-bench", "Bench Customer")
    header_id = trigger(engine, contact_ref="C-bench", template_code="BILL")
    now = utcnow()
    with engine.begin() as conn:
        ids = conn.execute(insert(details_t).returning(details_t.c.id,
                                                       sort_by_parameter_order=True), [
            {"header_id": header_id, "contact_id": contact_id, "media": "letter",
             "direction": "outgoing", "address": "1 High Street", "state": "completed",
             "created_at": now} for _ in docs]).scalars().all()
        conn.execute(insert(documents_t), [
            {"detail_id": d, "kind": "letter", "content_type": "application/pdf",
             "content": data, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
             "created_at": now} for d, data in zip(ids, docs, strict=True)])


def pipeline(backend: str, env: dict[str, str], docs: list[bytes]) -> float:
    url = fresh_database(backend, f"comms_bench_storage_{backend}")
    upgrade(url)
    settings = load_settings(environ={"COMMS_DATABASE_URL": url, **env})
    engine = make_engine(settings.database_url)
    seed(engine, docs)
    with timer() as took:
        Runner(settings, engine, StorageDaemon(settings, engine), once=True).run()
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(documents_t)
                              .where(documents_t.c.stored_at.isnot(None))).scalar_one()
    engine.dispose()
    if stored != len(docs):
        raise SystemExit(f"only {stored} of {len(docs)} documents stored")
    return took[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--size", type=int, default=30_000, help="bytes per document")
    parser.add_argument("--repeat", type=int, default=2,
                        help="interleaved rounds; the best of each is reported (noisy hosts)")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--targets", default="sftp,s3", help="comma-separated: sftp, s3")
    args = parser.parse_args()

    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    from tests.servers.smtp import free_port

    docs = [b"%PDF-1.7\n" + os.urandom(args.size - 9) for _ in range(args.n)]
    work = Path(tempfile.mkdtemp(prefix="comms-bench-storage-"))
    known_hosts = str(work / "known_hosts")
    s3_port = free_port()
    moto = start_moto(s3_port)
    endpoint = f"http://127.0.0.1:{s3_port}"
    ctx = mp.get_context("spawn")
    port_box, ready, stop = ctx.Value("i", 0), ctx.Event(), ctx.Event()
    sftp_proc = ctx.Process(target=serve_sftp, daemon=True,
                            args=(str(work / "root"), known_hosts, port_box, ready, stop))
    sftp_proc.start()
    ready.wait(30)
    runs: dict[str, list[float]] = {k: [] for k in ("raw_s3", "s3", "raw_sftp", "sftp")}
    try:
        for r in range(args.repeat):
            bucket = f"bench-{r}"
            client = s3_client(endpoint)
            client.create_bucket(Bucket=bucket)
            client.close()
            s3_env = {"COMMS_GATEWAYS_STORAGE_BACKEND": "s3",
                      "COMMS_GATEWAYS_STORAGE_BUCKET": bucket,
                      "COMMS_GATEWAYS_STORAGE_ENDPOINT_URL": endpoint,
                      "COMMS_GATEWAYS_STORAGE_ACCESS_KEY_ID": KEY_ID,
                      "COMMS_GATEWAYS_STORAGE_SECRET_ACCESS_KEY": SECRET}
            sftp_env = {"COMMS_GATEWAYS_STORAGE_BACKEND": "sftp",
                        "COMMS_GATEWAYS_STORAGE_PORT": str(port_box.value),
                        "COMMS_GATEWAYS_STORAGE_USERNAME": "comms",
                        "COMMS_GATEWAYS_STORAGE_PASSWORD": "s3cret",
                        "COMMS_GATEWAYS_STORAGE_KNOWN_HOSTS_FILE": known_hosts,
                        "COMMS_GATEWAYS_STORAGE_REMOTE_DIR": f"/archive{r}"}
            if "sftp" in args.targets:
                runs["raw_sftp"].append(raw_sftp(port_box.value, known_hosts, docs, r))
                runs["sftp"].append(pipeline(args.backend, sftp_env, docs))
            if "s3" in args.targets:
                runs["raw_s3"].append(raw_s3(endpoint, bucket, docs))
                runs["s3"].append(pipeline(args.backend, s3_env, docs))
    finally:
        stop.set()
        sftp_proc.join(30)
        moto.terminate()
        moto.wait(30)
    print(f"storage: {args.n} documents of {args.size:,} bytes, servers in separate processes, "
          f"database {args.backend}, best of {args.repeat} interleaved rounds")
    if runs["raw_sftp"]:
        raw_sftp_rate = row("bare paramiko putfo loop (asyncssh SFTP)", args.n,
                            min(runs["raw_sftp"]), "docs")
        sftp_rate = row("Storage daemon -> SFTP", args.n, min(runs["sftp"]), "docs")
        print(f"  ratio SFTP daemon / bare loop: {sftp_rate / raw_sftp_rate:.2f}")
    if runs["raw_s3"]:
        raw_s3_rate = row("bare boto3 put_object loop (moto S3)", args.n, min(runs["raw_s3"]),
                          "docs")
        s3_rate = row("Storage daemon -> S3", args.n, min(runs["s3"]), "docs")
        print(f"  ratio S3 daemon / bare loop:   {s3_rate / raw_s3_rate:.2f}")
    print(f"  peak RSS: this process {peak_rss_mb():.0f} MB, "
          f"largest server process {peak_rss_mb(children=True):.0f} MB")


if __name__ == "__main__":
    main()
