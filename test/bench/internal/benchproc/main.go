package benchproc

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
)

// Main runs run with a context that SIGINT, SIGTERM or SIGHUP cancels, then the cleanups, and
// exits 1 if run failed, its error printed after name. On a signal it runs the cleanups at
// once (stopping every child process and removing the temporary files) and exits 130.
func Main(name string, run func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "\n%v: stopping the child processes and removing temporary files\n", s)
		cancel()
		RunCleanups()
		os.Exit(130)
	}()
	// A panic in this goroutine still stops the children and removes what the run made (a
	// benchmark's network namespaces among them), then goes on.
	defer func() {
		if r := recover(); r != nil {
			RunCleanups()
			panic(r)
		}
	}()
	err := run(ctx)
	RunCleanups()
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// Logf logs a line of the benchmark's progress to stderr, after the time of day.
func Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// TempDir makes a new directory under parent (prefix, then random characters) for one run; the
// cleanups remove it unless keep, which it logs.
func TempDir(parent, prefix string, keep bool) (string, error) {
	dir, err := os.MkdirTemp(parent, prefix)
	if err != nil {
		return "", err
	}
	if keep {
		Logf("keeping %s", dir)
	} else {
		AtCleanup(func() { _ = os.RemoveAll(dir) })
	}
	return dir, nil
}

// CheckFree fails when the file system of dir has less than need bytes, and a tenth more, free.
func CheckFree(dir string, need int64) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return nil // no figure: let the run find out
	}
	if free := int64(st.Bavail) * st.Bsize; free < need+need/10 {
		return fmt.Errorf("%s has %s free; this run needs about %s (use -tmp or a smaller -size)",
			dir, humanize.IBytes(uint64(free)), humanize.IBytes(uint64(need)))
	}
	return nil
}
