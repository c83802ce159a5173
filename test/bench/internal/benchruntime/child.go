package benchruntime

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/shoal-oci/shoal/test/bench/internal/benchnetns"
)

// A runtime can run as a process of its own, started inside a node's network namespace
// (benchnetns): RunChild is the process, StartChild its controller's side. The process prints
// "ready", pulls when a line arrives on its stdin, prints "rx <bytes received so far>" every
// 100 ms meanwhile, and ends with "result <PullResult as JSON>".

// wireResult is a PullResult on the wire: the error as text.
type wireResult struct {
	PullResult
	Err string `json:",omitempty"`
}

// WriteImage writes im as JSON to path, for RunChild's -image.
func (im *Image) WriteImage(path string) error {
	b, err := json.Marshal(im)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// RunChild is a runtime process: -base (its agent's URL), -image (a file of WriteImage),
// -parallel.
func RunChild(args []string) error {
	fs := flag.NewFlagSet("pull", flag.ContinueOnError)
	base := fs.String("base", "", "the agent's URL")
	imFile := fs.String("image", "", "the image, as WriteImage wrote it")
	parallel := fs.Int("parallel", 3, "blobs at a time")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b, err := os.ReadFile(*imFile)
	if err != nil {
		return err
	}
	var im Image
	if err := json.Unmarshal(b, &im); err != nil {
		return err
	}
	var received atomic.Int64
	rt := New(*parallel, &received)
	defer rt.Close()
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return fmt.Errorf("waiting for the start: %w", err)
	}
	done := make(chan *PullResult, 1)
	go func() { done <- rt.Pull(context.Background(), *base, &im) }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			fmt.Println("rx", received.Load())
		case r := <-done:
			fmt.Println("rx", received.Load())
			w := wireResult{PullResult: *r}
			if r.Err != nil {
				w.Err = r.Err.Error()
			}
			out, _ := json.Marshal(w)
			fmt.Printf("result %s\n", out)
			return nil
		}
	}
}

// Child is a runtime process, started and ready to pull.
type Child struct {
	cmd      *exec.Cmd
	stdin    io.WriteCloser
	out      *bufio.Reader
	stderr   *benchnetns.Output
	received *atomic.Int64
}

// StartChild starts cmd (RunChild, in the node's namespace) and waits until it is ready; the
// bytes it receives are added to received as it reports them.
func StartChild(cmd *exec.Cmd, received *atomic.Int64) (*Child, error) {
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	c := &Child{cmd: cmd, stdin: in, stderr: &benchnetns.Output{}, received: received}
	if c.out, err = benchnetns.StartReady(cmd, c.stderr, 30*time.Second); err != nil {
		return nil, err
	}
	return c, nil
}

// Pull starts the pull and returns its result once the process has ended (it is killed when
// ctx ends).
func (c *Child) Pull(ctx context.Context) *PullResult {
	stop := context.AfterFunc(ctx, func() { _ = c.cmd.Process.Kill() })
	defer stop()
	start := time.Now()
	fail := func(err error) *PullResult {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
		return &PullResult{Start: start, End: time.Now(), Err: fmt.Errorf("%w (stderr: %.500s)", err, c.stderr.String())}
	}
	if _, err := io.WriteString(c.stdin, "go\n"); err != nil {
		return fail(err)
	}
	var last int64
	for {
		l, err := c.out.ReadString('\n')
		if err != nil {
			return fail(fmt.Errorf("runtime process: %w", err))
		}
		kind, rest, _ := strings.Cut(strings.TrimSpace(l), " ")
		switch kind {
		case "rx":
			if n, err := strconv.ParseInt(rest, 10, 64); err == nil {
				c.received.Add(n - last)
				last = n
			}
		case "result":
			var w wireResult
			if err := json.Unmarshal([]byte(rest), &w); err != nil {
				return fail(err)
			}
			r := w.PullResult
			if w.Err != "" {
				r.Err = errors.New(w.Err)
			}
			if err := c.cmd.Wait(); err != nil && r.Err == nil {
				r.Err = fmt.Errorf("runtime process: %w", err)
			}
			return &r
		}
	}
}

// Close kills the process if it is still there.
func (c *Child) Close() {
	if c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
	}
}
