package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrTimeout means the guest did not power off within Boot.Timeout.
var ErrTimeout = errors.New("vm: guest timed out")

// Boot describes one QEMU run: software emulation (no KVM on these
// machines), no network, the first serial port as the console and the
// second carrying results, both to host files.
type Boot struct {
	// Kernel and Initrd are the kernel image and initramfs to boot.
	Kernel, Initrd string
	// Append is added to the kernel command line.
	Append string
	// MemoryMiB and CPUs size the guest (defaults 1536 and 2).
	MemoryMiB, CPUs int
	// Disks are raw image files attached as virtio disks (vda, vdb...).
	Disks []string
	// Console receives the first serial port: kernel log and /init output.
	Console string
	// Results receives the second serial port (/dev/ttyS1 in the guest).
	Results string
	// Timeout bounds the whole run; the guest is killed after it.
	Timeout time.Duration
	// TPMSocket, when set, is the control socket of a swtpm: the guest
	// gets a TPM 2.0 on its TIS interface (/dev/tpmrm0).
	TPMSocket string
}

// Args returns the QEMU command line.
func (b *Boot) Args() []string {
	mem, cpus := b.MemoryMiB, b.CPUs
	if mem == 0 {
		mem = 1536
	}
	if cpus == 0 {
		cpus = 2
	}
	cmdline := "console=ttyS0 rdinit=/init panic=-1 oops=panic loglevel=4 mitigations=off"
	if b.Append != "" {
		cmdline += " " + b.Append
	}
	args := []string{
		"-accel", "tcg,thread=multi", "-cpu", "max",
		"-smp", strconv.Itoa(cpus), "-m", strconv.Itoa(mem),
		"-kernel", b.Kernel, "-initrd", b.Initrd, "-append", cmdline,
		"-nodefaults", "-display", "none", "-no-reboot", "-monitor", "none",
		"-serial", "file:" + b.Console, "-serial", "file:" + b.Results,
		"-nic", "none",
	}
	for _, d := range b.Disks {
		args = append(args, "-drive", "file="+d+",format=raw,if=virtio")
	}
	if b.TPMSocket != "" {
		args = append(args, "-chardev", "socket,id=chrtpm,path="+b.TPMSocket,
			"-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0")
	}
	return args
}

// Run boots the guest and waits until it powers off. It returns ErrTimeout
// (wrapped) when Timeout passes first, and QEMU's own complaints when it
// fails to start. A guest that panics also just stops (panic=-1 with
// -no-reboot): the results file tells what it got done.
func (b *Boot) Run(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, b.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", b.Args()...)
	// QEMU inherits the test's open files, the shared QEMU lock's among
	// them (flock /work/wt/qemu.lock go test ...): if the test binary dies
	// (its -timeout panics, it is killed), QEMU must die with it rather
	// than run on as an orphan holding the lock.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("%w after %s", ErrTimeout, b.Timeout)
	}
	if err != nil {
		return fmt.Errorf("vm: qemu-system-x86_64: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
