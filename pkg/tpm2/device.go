package tpm2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
)

// DefaultDevice is the kernel's resource-managed TPM, the device systemd's
// tpm2-device=auto finds.
const DefaultDevice = "/dev/tpmrm0"

// maxResponse bounds one TPM response (TPM 2.0 PC client: 4 KiB; allow more
// for software TPMs).
const maxResponse = 64 << 10

// TPM is an open connection to one TPM. It is used by one goroutine at a
// time; Close releases it.
type TPM struct {
	device string
	t      *wipingTransport
}

// Open opens the TPM that device names:
//   - "" or "auto": DefaultDevice;
//   - a path such as "/dev/tpmrm0" (a character device);
//   - "swtpm:host=H,port=P" (systemd's spelling of the swtpm TCTI; host
//     defaults to localhost, port to 2321): a software TPM whose data port
//     carries raw TPM commands.
//
// It fails with an error wrapping ErrNoTPM when there is no TPM there.
func Open(device string) (*TPM, error) {
	switch {
	case device == "" || device == "auto":
		device = DefaultDevice
	case strings.HasPrefix(device, "swtpm:") || device == "swtpm":
		addr, err := swtpmAddress(strings.TrimPrefix(strings.TrimPrefix(device, "swtpm"), ":"))
		if err != nil {
			return nil, err
		}
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				return nil, fmt.Errorf("%w: nothing listens on %s (%s)", ErrNoTPM, addr, device)
			}
			return nil, fmt.Errorf("%w: %s: %w", ErrNoTPM, device, err)
		}
		return &TPM{device: device, t: &wipingTransport{rw: conn}}, nil
	}
	fi, err := os.Stat(device)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s does not exist (no TPM 2.0 device, or its driver is not loaded)", ErrNoTPM, device)
		}
		return nil, fmt.Errorf("%w: %w", ErrNoTPM, err)
	}
	if fi.Mode()&os.ModeCharDevice == 0 {
		return nil, fmt.Errorf("%w: %s is not a character device", ErrNoTPM, device)
	}
	// A blocking descriptor, not os.OpenFile's: Go puts a pollable
	// character device in non-blocking mode, and the kernel's TPM driver
	// then runs the command asynchronously and answers a read before the
	// response is ready with 0 bytes (EOF), not EAGAIN. os.NewFile keeps
	// a blocking descriptor blocking.
	fd, err := syscall.Open(device, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrNoTPM, device, err)
	}
	return &TPM{device: device, t: &wipingTransport{rw: os.NewFile(uintptr(fd), device)}}, nil
}

// swtpmAddress parses systemd's/tpm2-tss's swtpm TCTI configuration
// ("host=H,port=P", either part optional).
func swtpmAddress(conf string) (string, error) {
	host, port := "localhost", 2321
	for _, kv := range strings.Split(conf, ",") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		switch {
		case ok && k == "host" && v != "":
			host = v
		case ok && k == "port":
			p, err := strconv.Atoi(v)
			if err != nil || p <= 0 || p > 65535 {
				return "", fmt.Errorf("tpm2: swtpm port %q is not a TCP port", v)
			}
			port = p
		default:
			return "", fmt.Errorf("tpm2: swtpm device: %q is not host=H or port=P", kv)
		}
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), nil
}

// Device returns the device string the TPM was opened with.
func (t *TPM) Device() string { return t.device }

// Close closes the connection.
func (t *TPM) Close() error { return t.t.Close() }

// wipingTransport sends one command and reads one whole response (its
// header says its size: a stream socket may deliver it in parts). It keeps
// the buffers of the last command so that wipe can zero them once go-tpm
// has parsed the response: those buffers carry sealed-secret material.
type wipingTransport struct {
	mu       sync.Mutex
	rw       io.ReadWriteCloser
	cmd, rsp []byte
}

var _ transport.TPM = (*wipingTransport)(nil)

// Response codes after which a TSS sends the same command again: the TPM
// did not start it (TPM_RC_RETRY, TPM_RC_YIELDED, TPM_RC_TESTING). libtpms
// answers TPM_RC_RETRY to the first command that needs a self-test.
var retryCodes = []uint32{0x922, 0x908, 0x90A}

// maxRetries bounds the resends of one command.
const maxRetries = 100

// Send implements transport.TPM.
func (w *wipingTransport) Send(cmd []byte) ([]byte, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.wipeLocked()
	w.cmd = cmd
	for range maxRetries {
		rsp, err := w.roundTrip(cmd)
		if err != nil || !slices.Contains(retryCodes, binary.BigEndian.Uint32(rsp[6:10])) {
			return rsp, err
		}
		clear(rsp)
		time.Sleep(10 * time.Millisecond)
	}
	return nil, fmt.Errorf("tpm2: the TPM asked %d times to retry the command", maxRetries)
}

func (w *wipingTransport) roundTrip(cmd []byte) ([]byte, error) {
	if _, err := w.rw.Write(cmd); err != nil {
		return nil, fmt.Errorf("%w (send command: %w)", ErrTPMGone, err)
	}
	var hdr [10]byte // tag, size, response code
	if _, err := io.ReadFull(w.rw, hdr[:]); err != nil {
		return nil, fmt.Errorf("%w (read response: %w)", ErrTPMGone, err)
	}
	n := binary.BigEndian.Uint32(hdr[2:6])
	if n < uint32(len(hdr)) || n > maxResponse {
		return nil, fmt.Errorf("tpm2: response of %d bytes", n)
	}
	rsp := make([]byte, n)
	copy(rsp, hdr[:])
	if _, err := io.ReadFull(w.rw, rsp[len(hdr):]); err != nil {
		return nil, fmt.Errorf("%w (read response: %w)", ErrTPMGone, err)
	}
	w.rsp = rsp
	return rsp, nil
}

// wipe zeroes the last command and response.
func (w *wipingTransport) wipe() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.wipeLocked()
}

func (w *wipingTransport) wipeLocked() {
	clear(w.cmd)
	clear(w.rsp)
	w.cmd, w.rsp = nil, nil
}

// Close implements io.Closer.
func (w *wipingTransport) Close() error {
	w.wipe()
	return w.rw.Close()
}

// Present reports whether device names a TPM that is there: a character
// device at its path, or a software TPM that accepts a connection (which
// Present closes again, since swtpm serves one connection at a time).
func Present(device string) bool {
	t, err := Open(device)
	if err != nil {
		return false
	}
	t.Close()
	return true
}
