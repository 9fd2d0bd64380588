"""The spawner: systemdspawner, plus the Unix account each hub user needs."""

import asyncio
import inspect
import pwd
import time

from jupyterhub.utils import maybe_future
from systemdspawner import SystemdSpawner
from tornado import web
from traitlets import Bool, CaselessStrEnum, Dict, Float, Integer, List, Unicode, default

from tljh.environments import EnvironmentNotReady, collect_unused, server_environment
from tljh.environments.serving import is_environment_bin
from tljh.environments.user_builds import is_build_name, record_use
from tljh.hub import profiles, session_installs
from tljh.hub.repository_builds import BuildLog, RepositoryBuilds
from tljh.hub.start_queue import StartQueue, parallel_for
from tljh.plugins import get_plugin_manager
from tljh.system import systemd

from . import accounts, isolation, server_extensions
from .port_isolation import PortIsolation
from .unit_states import UnitStates

from .server_sockets import UnixSocketServer, answers_http


class UserCreatingSpawner(UnixSocketServer, SystemdSpawner):
    """Run each user's server as a systemd unit under their own Unix account, created on first spawn.

    The account is ``jupyter-<name>``, one per hub name (:mod:`tljh.hub.accounts`), with a private home.
    Its groups follow the hub at every login and spawn: ``jupyterhub-users``, ``jupyterhub-admins``
    (passwordless sudo) for hub admins only, and ``users.extra_user_groups``. The unit is sandboxed
    (:mod:`tljh.hub.isolation`). The server listens on a unix socket only its owner and the proxy can open
    (:mod:`.server_sockets`).
    """

    user_groups = Dict(
        key_trait=Unicode(),
        value_trait=List(Unicode()),
        config=True,
        help="""
        Extra Unix groups for hub users: a dict of group name -> list of hub user names.

        Set from ``users.extra_user_groups`` in config.yaml. Groups that do not exist are created.
        Membership is synced at every login and spawn: users listed are added, users no longer listed are
        removed. Privileged groups (sudo, docker, shadow, ...) are never joined.
        """,
    )

    denied_addresses = List(
        Unicode(),
        default_value=list(isolation.CLOUD_METADATA_ADDRESSES),
        config=True,
        help="""
        Addresses users' servers (notebooks, terminals, kernels) cannot connect to, enforced by systemd
        (IPAddressDeny=, a cgroup BPF filter). By default the cloud instance metadata services, which hand
        the machine's cloud credentials to anyone who asks. Set from ``network.allow_cloud_metadata``.
        """,
    )

    kernel_debugger = Bool(
        False,
        config=True,
        help="""
        Let kernels in users' servers offer JupyterLab's debugger. Off by default: the debugger's adapter
        (debugpy) listens on a TCP port on 127.0.0.1 without authentication, and another local user who connects
        to it after its owner has detached can run code as the owner. Set from
        ``network.allow_kernel_debugger``; applied through the TLJH_KERNEL_DEBUGGER variable and the IPython
        kernel config the installer writes (tljh.hub.isolation.KERNEL_CONFIG).
        """,
    )

    private_ports = Bool(
        True,
        config=True,
        help="""
        Let only its owner (and root) connect to a TCP or UDP port that a process in a user's server listens on
        (a Dash app, a database, ipykernel's output pipe): anyone else is refused at once. Enforced with an
        nftables table the hub keeps (tljh.system.port_rules); connections to other machines and to the hub are
        not affected. Set from ``network.allow_connections_between_users`` (the inverse), hub-wide.
        """,
    )

    kernel_transport = CaselessStrEnum(
        ["ipc", "tcp"],
        default_value="ipc",
        config=True,
        help="""
        How servers talk to their kernels. "ipc": unix sockets in the server's private runtime directory,
        which other users cannot open. "tcp": ports on 127.0.0.1 (Jupyter's default) that any local user
        can connect to (kernel messages are signed, so they cannot run code without the key, but they are
        reachable). Use "tcp" only for a kernel that does not support IPC.
        """,
    )

    language_servers = Bool(
        False,
        config=True,
        help="""
        Load jupyter-lsp in users' servers, so that JupyterLab's code intelligence (completion, hover,
        diagnostics) can use a language server installed in their environment, such as python-lsp-server.
        Off by default: no environment has a language server unless an admin installs one, and jupyter-lsp
        searches for them at every start. Set from ``user_environment.language_servers``.
        """,
    )

    lab_extension_manager = Unicode(
        "readonly",
        config=True,
        help="""
        JupyterLab's extension manager in users' servers (``LabApp.extension_manager``). "readonly" lists
        the installed extensions. JupyterLab's default, "pypi", also searches PyPI and installs with the
        server's own pip, which users cannot do here (environments are read-only to them; admins install
        with ``tljh env`` or ``sudo -E pip``), and loading it costs every start its CPU. Empty: whatever the
        Jupyter config files say.
        """,
    )

    resource_metrics = Bool(
        False,
        config=True,
        help="""
        Let jupyter-resource-usage refresh its Prometheus metrics (each server's /metrics) every second in every
        server, idle or not (its default). Off: nothing on this hub reads them, and JupyterLab's memory display
        asks jupyter-resource-usage's own API, which measures when asked.
        """,
    )

    exit_collection = Bool(
        False,
        config=True,
        help="""
        Let a user's server run Python's final garbage collections over its whole heap when it stops (Python's
        default): about half a second of CPU per stop, while a class's starts wait for the CPU. Off: the server
        freezes its heap on the way out (``gc.freeze``), through the TLJH_SERVER_EXIT_COLLECTION variable and
        the Jupyter server config the installer writes (tljh.hub.server_extensions.SERVER_CONFIG).
        """,
    )

    profiles = List(
        Dict(),
        config=True,
        help="""
        Server profiles offered at /hub/spawn, in KubeSpawner's profile_list format, every implicit value
        explicit (tljh.settings.profiles.effective_profiles).

        Set from ``profiles`` in config.yaml. Empty: no picker, servers start with the hub-wide settings.
        When set, the spawner's ``options_form``, ``options_from_form`` and ``apply_user_options`` default to
        the picker and the checks of tljh.hub.profiles.
        """,
    )

    user_environment = Unicode(
        "default",
        config=True,
        help="""
        The environment servers run from: ``default`` (/opt/tljh/user) or a name under ``environments`` in
        config.yaml (/opt/tljh/envs/<name>). A profile sets it with ``spawner_override.user_environment``.
        The server keeps the build that is current when it starts until it stops.
        """,
    )

    environment_kernels = List(
        Unicode(),
        config=True,
        help="""
        Environments every server offers as kernels, besides its own ``python3``.

        A profile sets it through ``spawner_override.user_environment``.
        """,
    )

    repository = Unicode(
        "",
        config=True,
        help="""
        A git repository whose environment the server runs in, built from it (as the builder user, in a
        sandbox) unless that commit is built already. Set by a profile's ``spawner_override.repository``: in
        the picker's "Other: build from a repository" choice, what the user typed (checked against
        ``repository_hosts``). Empty: the server runs in ``user_environment``.
        """,
    )

    repository_ref = Unicode(
        "",
        config=True,
        help="The branch, tag or commit of ``repository`` (empty: its default branch). Set by a profile.",
    )

    repository_hosts = List(
        Unicode(),
        config=True,
        help="""
        Hosts users may build from: a repository a user types must be on one of them (``host`` or
        ``host:port``). Set from ``builds.allowed_hosts`` in config.yaml; empty: users cannot build.
        """,
    )

    repository_allow_unsupported = Bool(
        False,
        config=True,
        help="""
        Build what can be honoured of a user's repository that also asks for what cannot (and list the rest in
        the log), instead of refusing it. Set from ``builds.allow_unsupported``.
        """,
    )

    # One set of users' builds for the whole hub process, shared by every spawner.
    _repository_builds = None

    @property
    def repository_builds(self) -> RepositoryBuilds:
        if UserCreatingSpawner._repository_builds is None:
            UserCreatingSpawner._repository_builds = RepositoryBuilds(pm=get_plugin_manager())
        return UserCreatingSpawner._repository_builds

    # This spawn's build log (a repository start), followed by the spawn page; None otherwise.
    _build_log = None

    @default("options_form")
    def _options_form_default(self):
        return profiles.options_form if self.profiles else ""

    @default("options_from_form")
    def _options_from_form_default(self):
        return profiles.options_from_form if self.profiles else self._passthrough_options_from_form

    @default("apply_user_options")
    def _apply_user_options_default(self):
        return profiles.apply_user_options

    session_installs = Bool(
        True,
        config=True,
        help="""
        Give each server its session packages: what its user installs with pip or uv, in a notebook or a
        terminal, goes into a layer of its own over the server's environment, wins over the environment's
        version for that server's kernels, and is removed when the server stops (see
        :mod:`tljh.hub.session_installs`). Admins' ``sudo -E pip install`` still installs for everyone.

        Set from ``user_environment.session_installs`` in config.yaml; a profile overrides it. Off: users'
        pip installs are refused, as the environment is read-only for them.
        """,
    )

    concurrent_starts = Integer(
        config=True,
        help="""
        How many servers start at the same time; people whose server would start beyond that wait their turn
        in line, in order, and the spawn page shows their place. Set from ``hub.concurrent_starts`` in
        config.yaml; default: the number of CPUs.

        A start is mostly CPU: starting everyone at once makes every start as slow as all of them together
        (and JupyterHub gives up on those past ``start_timeout``); a few at a time, each takes about as long
        as alone and the last server runs no later.
        """,
    )

    @default("concurrent_starts")
    def _default_concurrent_starts(self):
        return parallel_for("auto")

    start_queue_timeout = Float(
        900,
        config=True,
        help="""
        Longest a person waits for their turn to start (seconds); then the spawn fails with a message saying
        the hub is busy. ``start_timeout`` counts from the turn, not from joining the line.
        """,
    )

    # JupyterHub's start_timeout (60 s) and http_timeout (30 s), raised. `tljh loadtest` on a busy 2-core
    # machine: a server's own start (its turn -> JupyterLab) took 58 s median and 81 s at p95, and with
    # JupyterHub's defaults the hub gave up on 34 of 40 servers that were still starting, each after the
    # CPU of its start was spent (the person then sees an error page and tries again: more load). Starts
    # wait their turn before these count, and a server that dies is reported at once, so waiting longer
    # only helps servers that are slow, never broken ones. 300 s is also Zero to JupyterHub's start timeout.
    @default("start_timeout")
    def _default_start_timeout(self):
        return 300

    @default("http_timeout")
    def _default_http_timeout(self):
        return 240

    # One line for the whole hub process, shared by every spawner (a reload restarts the hub, and the line).
    _start_queue = None

    @property
    def start_queue(self):
        if UserCreatingSpawner._start_queue is None:
            UserCreatingSpawner._start_queue = StartQueue(self.concurrent_starts)
        return UserCreatingSpawner._start_queue

    # One for the whole hub process (the rules cover every server), like the start line.
    _port_isolation = None

    @property
    def port_isolation(self):
        if UserCreatingSpawner._port_isolation is None:
            UserCreatingSpawner._port_isolation = PortIsolation(self.private_ports, self.log)
        return UserCreatingSpawner._port_isolation

    # One for the whole hub process: every server's poll shares its query (tljh.hub.unit_states).
    _unit_states = None

    @property
    def unit_states(self):
        if UserCreatingSpawner._unit_states is None:
            UserCreatingSpawner._unit_states = UnitStates()
        return UserCreatingSpawner._unit_states

    async def run_pre_spawn_hook(self):
        """Build the repository asked for, if any, then wait for this server's turn, then the configured hook:
        all outside JupyterHub's start_timeout (a build takes minutes; a turn waits for others)."""
        self._build_log = None
        if self.repository:
            self._build_log = log = BuildLog()
            try:
                self.user_environment = await self.repository_builds.environment_for(
                    self.repository, self.repository_ref or None, self.user.name, log,
                    allow_unsupported=self.repository_allow_unsupported,
                )
            except BaseException:
                self._build_log = None
                raise
            finally:
                log.finish()
        queue = self.start_queue
        try:
            await asyncio.wait_for(queue.acquire(self), self.start_queue_timeout)
        except asyncio.TimeoutError:
            self._build_log = None
            raise RuntimeError(
                f"The hub is starting many servers and yours did not get its turn within "
                f"{self.start_queue_timeout / 60:.0f} minutes. Please try again in a few minutes."
            ) from None
        try:
            result = super().run_pre_spawn_hook()
            if inspect.isawaitable(result):
                await result
        except BaseException:
            queue.release(self)
            raise

    async def progress(self):
        """The spawn page's messages: a repository's build log, place in line while waiting, then the start.

        Events carry ``tljh_phase`` ("building" / "queued" / "starting") and, at the turn, ``tljh_waited``
        (seconds in line): `tljh loadtest` reads them to tell waiting from starting."""
        if self.repository:
            # The page may connect a moment before the pre-spawn hook has begun the build.
            while self._build_log is None and self._spawn_pending:
                await asyncio.sleep(0.05)
            if self._build_log is not None:
                async for line in self._build_log.follow():
                    yield {"progress": 20, "tljh_phase": "building", "message": line}
        queue = self.start_queue
        async for state, before in queue.places(self):
            if state == "waiting":
                yield {
                    "progress": 10,
                    "tljh_phase": "queued",
                    "message": f"Waiting for a turn to start: {len(queue.running)} servers are starting, "
                    f"{before} {'person is' if before == 1 else 'people are'} ahead of you",
                }
            else:
                yield {"progress": 30, "tljh_phase": "starting", "tljh_waited": round(queue.waited.get(self, 0.0), 3),
                       "message": "Starting your server"}

    async def _wait_answering(self):
        path = self.server.base_url + "api" if self.server else "/"
        # On a timeout JupyterHub's own check, which follows, says so.
        await self.wait_starting(lambda: answers_http(self.link_path, path))

    async def delete_forever(self):
        """The default server's spawner is deleted only with its user (JupyterHub refuses to remove it
        otherwise): the user's account is locked (files kept) and cannot log in any more."""
        await maybe_future(super().delete_forever())  # JupyterHub's is a plain function; it may become async
        if not self.name:
            await accounts.close(self.user.name, "deleted from the hub")

    async def stopped_while_starting(self):
        """One sentence for the person waiting on the spawn page (JupyterHub shows it there)."""
        unit = await systemd.properties(self.unit_name, "Result", "ExecMainStatus")
        result, status = unit["Result"], unit["ExecMainStatus"]
        if self.mem_limit and systemd.killed_for_memory(result, status):
            return (
                f"Your server was stopped while starting: it needed more memory than its limit "
                f"({self.mem_limit // 2**20} MB). A JupyterLab server needs about 150 MB on its own. "
                "An admin can raise the limit: sudo tljh-config set limits.memory 1G; sudo tljh-config reload"
            )
        return (
            f"Your server stopped while starting (result: {result.strip() or 'unknown'}). "
            f"An admin can see why with: sudo journalctl -u {self.unit_name}"
        )

    @default("username_template")
    def _username_template_default(self):
        # The account name itself rather than a template, so that it is right also when start() has not run
        # in this hub process (stop and poll after a hub restart find the server's socket link by it).
        return accounts.known_unix_name(self.user.name)

    def get_args(self):
        args = super().get_args()  # the admin's c.Spawner.args: an option given there wins
        lean = server_extensions.server_args(self.language_servers, self.lab_extension_manager,
                                             self.resource_metrics, given=args)
        return lean + args + isolation.server_args(self.kernel_transport)

    def get_env(self):
        return {**super().get_env(), **isolation.server_environment(self.unit_name, self.kernel_debugger),
                **server_extensions.server_environment(self.exit_collection)}

    unit_unload_timeout = Float(
        30,
        config=True,
        help="""
        Seconds to wait, before starting a server, for systemd to unload the previous run of its unit.

        systemd unloads a stopped transient unit a moment after it stops (later on a busy machine); starting
        one of the same name before that fails ("already loaded"), and systemdspawner then waits out its whole
        start_timeout. A running or failed unit is systemdspawner's to stop or reset.
        """,
    )

    async def _wait_previous_unit_unloaded(self):
        deadline = time.monotonic() + self.unit_unload_timeout
        while time.monotonic() < deadline:
            state = await systemd.properties(self.unit_name, "LoadState", "ActiveState")
            if state["LoadState"] != "loaded" or state["ActiveState"] not in ("inactive", "deactivating"):
                return
            await asyncio.sleep(0.2)
        self.log.warning("Unit %s still loaded %.0f s after it stopped; starting anyway", self.unit_name,
                         self.unit_unload_timeout)

    def _apply_environment(self):
        """Run from ``user_environment``: its bin/ first on PATH, its jupyterhub-singleuser, the kernels of the
        offered environments, and every environment pinned to its current build in the unit's mounts.
        Idempotent: a spawner object serves every start of a user's server, in any environment."""
        env = server_environment(self.user_environment, self.environment_kernels)
        self.extra_paths = [*env.extra_paths, *(p for p in self.extra_paths if not is_environment_bin(p))]
        self.cmd = env.command(self.cmd)
        managed = ("JUPYTER_PATH", "TLJH_ENVIRONMENT")
        self.environment = {**{k: v for k, v in self.environment.items() if k not in managed}, **env.environment}
        self.unit_extra_properties = {**self.unit_extra_properties, **env.unit_properties}
        self._tljh_environment_properties = dict(env.unit_properties)  # _apply_isolation keeps them

    def _apply_environment_or_refuse(self):
        try:
            self._apply_environment()
        except EnvironmentNotReady as e:
            raise environment_not_ready(str(e)) from None

    def _collect_unused(self):
        try:
            collect_unused()
        except Exception:
            self.log.exception("Could not delete unused environment builds")

    def _configured(self):
        """The admin's own unit properties, disable_user_sudo and isolate_devices, as they were before any start
        changed them (taken once, before the first start's environment or sandbox)."""
        return self.__dict__.setdefault(
            "_tljh_configured", (dict(self.unit_extra_properties), self.disable_user_sudo, self.isolate_devices)
        )

    def _apply_isolation(self):
        """The sandbox for this start, from the configured settings and the user's admin status now.

        JupyterHub keeps a spawner object across starts (and systemdspawner rewrites unit_extra_properties in
        place): start from the admin's configured properties each time, or an admin's relaxed sandbox would stay
        with a demoted user's next server, and a non-admin's no_new_privs with a promoted one's (no sudo).
        """
        properties, sudo_off, devices_off = self._configured()
        self.unit_extra_properties = {
            **isolation.unit_properties(self.user.admin, self.denied_addresses),
            **isolation.runtime_directories(self.unit_name),
            **properties,  # the admin's own settings win
            **getattr(self, "_tljh_environment_properties", {}),  # this start's environment builds
        }
        # Admins keep sudo in their servers (TLJH: `sudo -E pip install X` in a terminal installs for everyone):
        # no NoNewPrivileges= for them (systemdspawner sets it by default), nor PrivateDevices=, which implies it.
        self.disable_user_sudo = sudo_off and not self.user.admin
        self.isolate_devices = devices_off and not self.user.admin

    async def start(self):
        try:
            return await self._start()
        finally:
            # The turn ends with the start (ready, failed, or cancelled by JupyterHub's start_timeout).
            self.start_queue.release(self)
            self._build_log = None

    async def _start(self):
        self._configured()
        # First: a server whose environment cannot serve changes nothing (no account, no unit).
        self._apply_environment_or_refuse()
        try:
            system_username = await accounts.ensure_account(
                self.user.name, on_create=lambda unix: get_plugin_manager().hook.tljh_new_user_create(username=unix)
            )
        except accounts.NameRefused as e:
            self.log.warning("Not starting a server for hub user %r: %s", self.user.name, e.detail)
            raise RuntimeError(str(e)) from None
        # systemdspawner reads the account name from this template and the unit name from unit_name. Named
        # servers need units of their own; ':' is valid in unit names and never in Unix names.
        self.username_template = system_username
        self.unit_name = f"{system_username}:{self.name}" if self.name else system_username
        await accounts.sync_groups(system_username, self.user.name, self.user.admin, self.user_groups)
        self._apply_isolation()
        # Before the session layer: the previous run's ExecStopPost removes the layer directory of this unit.
        await self._wait_previous_unit_unloaded()
        account = pwd.getpwnam(system_username)
        layer = None
        if self.session_installs:
            layer = await asyncio.to_thread(
                session_installs.open_layer, self.unit_name, session_installs.server_prefix(self.cmd),
                self.environment.get("JUPYTER_PATH", ""), account.pw_uid, account.pw_gid,
            )
        session_installs.configure_spawner(self, layer)
        # Terminals run login shells, whose /etc/profile may reset PATH: tljh's profile.d script restores these.
        self.environment = {**self.environment, "TLJH_SERVER_PATH": ":".join(self.extra_paths)}
        # Its owner's connections marked before the server opens any (see PortIsolation.admit).
        await self.port_isolation.admit(account.pw_uid)
        self._unit_starting = True
        try:
            url = await super().start()
        except BaseException:
            if layer is not None:
                await asyncio.to_thread(layer.remove)
            raise
        finally:
            self._unit_starting = False
        # Now that the unit's cgroup exists; before the user can start anything that opens a port (kernels,
        # terminals come after the server answers).
        await self.port_isolation.update()
        await self._wait_answering()
        return url

    async def stop(self, now=False):
        await super().stop(now=now)
        await self.port_isolation.update()
        await asyncio.to_thread(session_installs.remove_layer, self.unit_name)
        if is_build_name(self.user_environment):
            # A user's build is in use until its last server stops: its last use is now.
            await asyncio.to_thread(record_use, self.user_environment, self.user.name)
        # The builds this server had pinned may now be unused: delete them, without making the stop wait.
        asyncio.get_running_loop().run_in_executor(None, self._collect_unused)

    # True while systemdspawner's start() waits for the unit to run (and the socket mixin for it to bind its
    # socket): systemdspawner asks poll() once a second for start_timeout seconds and never looks whether
    # the unit failed or whether `systemd-run` created it at all, so a server that could not start kept its
    # person waiting the whole start_timeout for "Spawn failed" without a reason (found by `tljh loadtest`).
    _unit_starting = False

    async def poll(self):
        """None while the server's unit runs; 1 once systemd says it stopped.

        Asked of every server's unit at once, at most once a second (:mod:`tljh.hub.unit_states`), instead of
        systemdspawner's ``systemctl is-active`` per server and poll. That answer may predate a unit just
        started, and systemctl fails while systemd re-executes itself (as a systemd package upgrade makes it
        do: `tljh loadtest` saw running servers taken for stopped, their starts given up; the hub also stops a
        running server that a poll calls stopped). So a server counts as stopped only when systemd's
        ActiveState of its unit, asked then, says so; when systemctl says nothing, it is still running."""
        if await self.unit_states.running(self.unit_name):
            await self.port_isolation.check()
            return None
        state = (await systemd.properties(self.unit_name, "ActiveState"))["ActiveState"].strip()
        if state not in ("inactive", "failed"):
            return None
        if self._unit_starting:
            # Just after `systemd-run` started it, a unit that is not running died or was never created
            # (systemd-run itself failed): either way it will not start, so say so now.
            raise RuntimeError(await self.stopped_while_starting())
        if not self._spawn_pending:
            # Stopped behind the hub's back (systemctl kill, a crash). JupyterHub calls stop() only for a server
            # that still runs, so its session packages and the hub's link to its socket go here.
            await asyncio.to_thread(session_installs.remove_layer, self.unit_name)
            await self.remove_link()
            await self.port_isolation.update()
        return 1


def environment_not_ready(message: str) -> web.HTTPError:
    """The error a start raises when its environment is not built: an HTTPError, because JupyterHub passes those
    through to the spawn form and the REST API with their message (any other exception raised within the first
    second of a spawn becomes "Unhandled error starting server")."""
    error = web.HTTPError(503, message)
    error.jupyterhub_message = message  # what the spawn-pending page shows after the failure
    return error
