"""Make this (fresh, Debian/Ubuntu) machine look like a server that ran The Littlest JupyterHub 2, from the outside.

Run as root with the system python3, in a test machine only. Everything comes from PyPI and the OS; nothing
from GitHub or conda channels, so TLJH itself is not installed. What stands in for what:

- /opt/tljh/hub: a venv of the system's Python (as TLJH 2 makes it) with TLJH 2's hub requirements
  (tljh/requirements-hub-env.txt: jupyterhub 5.1, the authenticators, spawner, idle culler, pycurl) and
  jupyterhub-traefik-proxy, plus a stand-in for TLJH's own distribution (the-littlest-jupyterhub 2.0.0 with
  a ``tljh`` package; the real one is not on PyPI): the bootstrap must replace it. That JupyterHub creates
  TLJH's hub database (users alice, bob@uni.example, admin) and cookie secret.
- FirstUse passwords in /opt/tljh/state/passwords.dbm (bcrypt, as FirstUseAuthenticator writes them).
- config.yaml with TLJH's keys: users, HTTPS with Let's Encrypt (disabled, so the hub stays reachable without
  a CA), the culler, traefik_api.
- /opt/tljh/user laid out as a conda installation: conda-meta/ records and history (python, conda, mamba,
  pip, a program `hello-tool` asked for by name), its own bin/python (a copied interpreter: a venv made with
  --copies; the OS offers no other Python version), pip-installed packages, a kernelspec and etc/jupyter
  configuration written by an admin.
- traefik.service: TLJH's unit name holding port 80. The program is a stand-in (Python's http.server at
  /opt/tljh/hub/bin/traefik answering 404 under /hub/), since traefik's own binary is a GitHub download.
  TLJH's state files for it (traefik.toml, rules/, acme.json, traefik-api.secret) are written too.
- Unix accounts jupyter-alice and jupyter-bob@uni.example (TLJH's names), with files in their homes.
"""

import json
import os
import subprocess
import sys
import textwrap

PASSWORDS = {"admin": "admin-old-password", "alice": "alice-old-password", "bob@uni.example": "bob-old-password"}
USER_PACKAGES = ["jupyterhub>=5.2,<6", "ipykernel", "pyfiglet==1.0.2", "cowsay==6.1"]
# TLJH 2's tljh/requirements-hub-env.txt, and the proxy class TLJH configures.
HUB_PACKAGES = [
    "jupyterhub>=5.1.0,<5.2.0", "jupyterhub-systemdspawner>=1.0.1,<2", "jupyterhub-firstuseauthenticator>=1.1.0,<2",
    "jupyterhub-nativeauthenticator>=1.3.0,<2", "jupyterhub-ldapauthenticator>=2.0.0,<3",
    "jupyterhub-tmpauthenticator>=1.0.0,<2", "oauthenticator>=17.1.0,<18", "jupyterhub-idle-culler>=1.4.0,<2",
    "pycurl>=7.45.3,<8", "jupyterhub-traefik-proxy>=2,<3",
]


def run(*cmd, **kw):
    subprocess.run(cmd, check=True, **kw)


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    os.chmod(path, mode)


def hub_env():
    run("python3", "-m", "venv", "/opt/tljh/hub")
    run("/opt/tljh/hub/bin/pip", "install", "--quiet", *HUB_PACKAGES)
    # TLJH's own distribution, by name and with modules this project does not have (tljh.traefik).
    src = "/tmp/tljh-standin"
    write(f"{src}/pyproject.toml", """\
        [project]
        name = "the-littlest-jupyterhub"
        version = "2.0.0"
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [tool.setuptools]
        packages = ["tljh"]
        """)
    write(f"{src}/tljh/__init__.py", "")
    write(f"{src}/tljh/traefik.py", "# TLJH's traefik configuration module (stand-in)\n")
    run("/opt/tljh/hub/bin/pip", "install", "--quiet", src)


def config():
    os.makedirs("/opt/tljh/config/jupyterhub_config.d", mode=0o700, exist_ok=True)
    os.chmod("/opt/tljh/config", 0o700)
    write("/opt/tljh/config/config.yaml", """\
        users:
          admin:
          - admin
          allowed:
          - alice
          - bob@uni.example
        https:
          enabled: false
          letsencrypt:
            email: hub-admin@uni.example
            domains:
            - hub.uni.example
        services:
          cull:
            timeout: 3600
            every: 300
        traefik_api:
          port: 8099
        """, 0o600)


def state():
    os.makedirs("/opt/tljh/state/rules", mode=0o700, exist_ok=True)
    os.chmod("/opt/tljh/state", 0o700)
    write("/opt/tljh/state/traefik.toml", '[entryPoints.http]\naddress = ":80"\n', 0o600)
    write("/opt/tljh/state/rules/dynamic.toml", "[http.routers]\n", 0o600)
    write("/opt/tljh/state/traefik-api.secret", "0123456789abcdef" * 4, 0o600)
    write("/opt/tljh/state/acme.json", json.dumps({"letsencrypt": {"Account": {"Email": "hub-admin@uni.example"},
                                                                     "Certificates": []}}), 0o600)
    # TLJH's hub database, made by the JupyterHub TLJH 2 runs, in TLJH's working directory (its state dir).
    write("/opt/tljh/state/make_db_config.py", f"""\
        c.JupyterHub.db_url = "sqlite:////opt/tljh/state/jupyterhub.sqlite"
        c.JupyterHub.cookie_secret_file = "/opt/tljh/state/jupyterhub_cookie_secret"
        c.JupyterHub.authenticator_class = "firstuseauthenticator.FirstUseAuthenticator"
        c.Authenticator.admin_users = {{"admin"}}
        c.Authenticator.allowed_users = {{"alice", "bob@uni.example"}}
        c.ConfigurableHTTPProxy.should_start = False
        c.ConfigurableHTTPProxy.auth_token = "not-used: nothing is proxied while the database is made"
        """, 0o600)
    run("/opt/tljh/hub/bin/python", "-c", textwrap.dedent("""\
        import asyncio
        from jupyterhub.app import JupyterHub
        async def main():
            app = JupyterHub()
            await app.initialize(["-f", "/opt/tljh/state/make_db_config.py"])
            names = sorted(u.name for u in app.db.query(__import__("jupyterhub.orm").orm.User))
            print("hub database users:", names, "jupyterhub", __import__("jupyterhub").__version__)
        asyncio.run(main())
        """), cwd="/opt/tljh/state")
    os.remove("/opt/tljh/state/make_db_config.py")
    # FirstUse passwords, as FirstUseAuthenticator stores them (bcrypt hashes in a dbm file).
    run("/opt/tljh/hub/bin/python", "-c", textwrap.dedent(f"""\
        import bcrypt, dbm
        with dbm.open("/opt/tljh/state/passwords.dbm", "c", 0o600) as db:
            for name, password in {PASSWORDS!r}.items():
                db[name] = bcrypt.hashpw(password.encode(), bcrypt.gensalt())
        """))


def user_env():
    prefix = "/opt/tljh/user"
    run("python3", "-m", "venv", "--copies", prefix)
    run(f"{prefix}/bin/pip", "install", "--quiet", *USER_PACKAGES)
    version = subprocess.run([f"{prefix}/bin/python", "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    records = {
        "python": (version, [f"bin/python{version.rsplit('.', 1)[0]}"]),
        "conda": ("24.7.1", ["bin/conda"]),
        "mamba": ("1.5.9", ["bin/mamba"]),
        "pip": ("24.2", []),
        "hello-tool": ("2.12", ["bin/hello"]),
        "libhello": ("2.12", ["lib/libhello.so.2"]),
    }
    for name, (ver, files) in records.items():
        for rel in files:
            path = os.path.join(prefix, rel)
            if not os.path.exists(path):
                write(path, "#!/bin/sh\necho 'Hello, world!'\n", 0o755)
        write(f"{prefix}/conda-meta/{name}-{ver}-0.json",
              json.dumps({"name": name, "version": ver, "channel": "conda-forge", "files": files}))
    write(f"{prefix}/conda-meta/history", """\
        ==> 2025-01-10 09:00:00 <==
        # cmd: constructor
        # update specs: ['python 3.12.*', 'conda 24.7.1', 'mamba 1.5.9', 'pip']
        ==> 2025-01-10 09:05:00 <==
        # cmd: /opt/tljh/user/bin/mamba install --yes -c conda-forge --prefix /opt/tljh/user hello-tool
        # update specs: ["hello-tool"]
        """)
    write(f"{prefix}/share/jupyter/kernels/course/kernel.json", json.dumps({
        "argv": [f"{prefix}/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Statistics 101", "language": "python", "env": {"COURSE": "stats101"}}))
    write(f"{prefix}/etc/jupyter/jupyter_server_config.py", "# Statistics 101: servers stop after an hour idle\n"
          "c.ServerApp.shutdown_no_activity_timeout = 3600\n")
    run("chmod", "-R", "o-w", prefix)


def traefik():
    write("/opt/tljh/hub/bin/traefik", """\
        #!/bin/sh
        # Stand-in for traefik (a GitHub download): a small server holding TLJH's port 80.
        mkdir -p /run/traefik-standin && exec /usr/bin/python3 -m http.server 80 --directory /run/traefik-standin
        """, 0o755)
    write("/etc/systemd/system/traefik.service", """\
        [Unit]
        After=network.target

        [Service]
        User=root
        Restart=always
        WorkingDirectory=/opt/tljh/state
        ExecStart=/opt/tljh/hub/bin/traefik -c /opt/tljh/state/traefik.toml

        [Install]
        WantedBy=multi-user.target
        """)
    write("/etc/systemd/system/jupyterhub.service", """\
        [Unit]
        Requires=traefik.service
        After=traefik.service

        [Service]
        User=root
        Restart=always
        WorkingDirectory=/opt/tljh/state
        Environment=TLJH_INSTALL_PREFIX=/opt/tljh
        ExecStart=/opt/tljh/hub/bin/python3 -m jupyterhub -f /opt/tljh/hub/lib/python3/site-packages/tljh/jupyterhub_config.py --upgrade-db

        [Install]
        WantedBy=multi-user.target
        """)
    run("systemctl", "daemon-reload")
    run("systemctl", "enable", "--now", "traefik.service")


def accounts():
    run("groupadd", "--force", "jupyterhub-users")
    run("groupadd", "--force", "jupyterhub-admins")
    for name in ("admin", "alice", "bob@uni.example"):
        account = "jupyter-" + name
        run("useradd", "--create-home", account)
        run("chmod", "o-rwx", f"/home/{account}")
        run("gpasswd", "--add", account, "jupyterhub-users")
        path = f"/home/{account}/notes-from-tljh.txt"
        write(path, f"{name}'s notes, written under TLJH\n", 0o600)
        run("chown", f"{account}:{account}", path)
    run("gpasswd", "--add", "jupyter-admin", "jupyterhub-admins")


if __name__ == "__main__":
    steps = {f.__name__: f for f in (hub_env, config, state, user_env, traefik, accounts)}
    for name in sys.argv[1:] or steps:
        steps[name]()
    print("a TLJH 2 server, from the outside")
