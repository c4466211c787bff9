package daemon

import (
	"log/slog"
	"strings"

	sd "github.com/coreos/go-systemd/v22/daemon"
)

// notifier speaks systemd's notify protocol ($NOTIFY_SOCKET). Outside
// systemd, with no socket, every call is a no-op.
type notifier struct {
	log  *slog.Logger
	last string
}

func (n *notifier) send(lines ...string) {
	state := strings.Join(lines, "\n")
	if _, err := sd.SdNotify(false, state); err != nil {
		n.log.Warn("sd_notify failed", "error", err)
	}
}

// Status sets the one-line status `systemctl status` shows; unchanged
// lines are not resent.
func (n *notifier) Status(s string) {
	if s == n.last {
		return
	}
	n.last = s
	n.send("STATUS=" + s)
}

// Ready says start-up is over, with the status that goes with it.
func (n *notifier) Ready(status string) {
	n.last = status
	n.send("READY=1", "STATUS="+status)
}

// Reloading and Reloaded frame a SIGHUP reload.
func (n *notifier) Reloading() { n.send("RELOADING=1") }
func (n *notifier) Reloaded()  { n.send("READY=1") }

// Stopping says SIGTERM was received.
func (n *notifier) Stopping() { n.send("STOPPING=1", "STATUS=stopping; volumes stay open") }

// Watchdog pings the service manager's watchdog.
func (n *notifier) Watchdog() { n.send("WATCHDOG=1") }
