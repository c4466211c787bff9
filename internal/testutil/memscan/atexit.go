package memscan

import (
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// AtExit starts cmd under ptrace, lets it run to its end and calls inspect
// with the process id when the process is about to exit: it has finished
// its work, but its memory is intact. cmd's Stdout and Stderr must be nil or
// *os.File (AtExit reaps the process itself, so exec's copying goroutines
// would never finish). It returns the process's exit status.
//
// Every thread is traced, so the thread that calls exit_group reports the
// exit stop (the others may die without one under a pending SIGKILL).
func AtExit(cmd *exec.Cmd, inspect func(pid int)) (int, error) {
	done := make(chan struct{})
	var status int
	var err error
	go func() {
		defer close(done)
		// ptrace requests must come from the thread that started the tracee.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		status, err = trace(cmd, inspect)
	}()
	<-done
	return status, err
}

func trace(cmd *exec.Cmd, inspect func(pid int)) (int, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Ptrace = true
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	pid := cmd.Process.Pid
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, syscall.WALL, nil); err != nil {
		return 0, err
	}
	if !ws.Stopped() {
		return 0, fmt.Errorf("memscan: %s did not stop after exec: %v", cmd.Path, ws)
	}
	if err := syscall.PtraceSetOptions(pid, syscall.PTRACE_O_TRACEEXIT|syscall.PTRACE_O_TRACECLONE|unix.PTRACE_O_EXITKILL); err != nil {
		return 0, err
	}
	if err := syscall.PtraceCont(pid, 0); err != nil {
		return 0, err
	}
	inspected := false
	for {
		tid, err := syscall.Wait4(-1, &ws, syscall.WALL, nil)
		if err != nil {
			return 0, err
		}
		switch {
		case ws.Exited() || ws.Signaled():
			if tid != pid {
				continue
			}
			if !inspected {
				return 0, errors.New("memscan: the process exited without an exit stop")
			}
			if ws.Signaled() {
				return 128 + int(ws.Signal()), nil
			}
			return ws.ExitStatus(), nil
		case ws.Stopped():
			sig := ws.StopSignal()
			switch {
			case sig == syscall.SIGTRAP && ws.TrapCause() == syscall.PTRACE_EVENT_EXIT:
				if !inspected {
					inspected = true
					inspect(pid)
				}
				sig = 0
			case sig == syscall.SIGTRAP, sig == syscall.SIGSTOP:
				// clone events and new threads' initial stop
				sig = 0
			}
			_ = syscall.PtraceCont(tid, int(sig))
		}
	}
}
