package benchproc

import "testing"

func TestGroupLogs(t *testing.T) {
	proc := func(name, out string) *Shoal {
		s := &Shoal{Name: name, out: &Output{Limit: 1 << 20}}
		_, _ = s.out.Write([]byte(out))
		return s
	}
	a := proc("agent 1", `time=1 level=WARN msg="peer fetch failed" peer=x
time=2 level=INFO msg=ready
time=3 level=WARN msg="peer fetch failed" peer=y
panic: boom 42
`)
	seed := proc("seed", "time=4 level=ERROR msg=stopped\ntime=5 level=WARN msg=\"peer fetch failed\"\n")
	got := GroupLogs([]*Shoal{a, nil, seed})
	if len(got) != 3 {
		t.Fatalf("%d kinds, want 3: %+v", len(got), got)
	}
	if k := got[0]; k.Key != "WARN peer fetch failed" || k.Count != 3 || len(k.Procs) != 2 || k.Example != `time=1 level=WARN msg="peer fetch failed" peer=x` {
		t.Fatalf("most frequent kind: %+v", k)
	}
	keys := map[string]int{}
	for _, k := range got {
		keys[k.Key] = k.Count
	}
	if keys["ERROR stopped"] != 1 || keys["OTHER panic: boom #"] != 1 {
		t.Fatalf("kinds: %v", keys)
	}
}
