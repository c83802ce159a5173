package benchproc

import (
	"regexp"
	"sort"
	"strings"
)

// LogKind is one kind of line that shoal processes logged: how often, by which processes, and
// one example.
type LogKind struct {
	Key     string          // the level and the message: "WARN peer fetch failed"
	Count   int             // lines of this kind
	Procs   map[string]bool // the processes that logged it, by name: "agent 3", "seed"
	Example string          // the first such line
}

var (
	logLevelRe = regexp.MustCompile(`level=(WARN|ERROR)`)
	logMsgRe   = regexp.MustCompile(`msg="([^"]*)"|msg=(\S+)`)
	digitsRe   = regexp.MustCompile(`[0-9]+`)
)

// GroupLogs groups the WARN and ERROR lines that the processes logged by level and message, most
// frequent first. A line that is not one of shoal's structured log lines (libp2p's own logger,
// a panic) counts as level OTHER, grouped by its text without numbers.
func GroupLogs(procs []*Shoal) []*LogKind {
	byKey := map[string]*LogKind{}
	for _, a := range procs {
		if a == nil {
			continue
		}
		for l := range strings.SplitSeq(a.Output(), "\n") {
			lv := logLevelRe.FindStringSubmatch(l)
			if lv == nil {
				if strings.TrimSpace(l) != "" && !strings.Contains(l, "level=") {
					lv = []string{"", "OTHER"} // e.g. a panic
				} else {
					continue
				}
			}
			var msg string
			if m := logMsgRe.FindStringSubmatch(l); m != nil && lv[1] != "OTHER" {
				msg = m[1] + m[2]
			} else {
				// Not one of the agent's structured lines (libp2p's own logger, a panic):
				// group by the text without its numbers.
				msg = digitsRe.ReplaceAllString(l, "#")
				if len(msg) > 120 {
					msg = msg[:120]
				}
			}
			key := lv[1] + " " + msg
			ll := byKey[key]
			if ll == nil {
				ll = &LogKind{Key: key, Procs: map[string]bool{}, Example: l}
				byKey[key] = ll
			}
			ll.Count++
			ll.Procs[a.String()] = true
		}
	}
	out := make([]*LogKind, 0, len(byKey))
	for _, l := range byKey {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Count > out[j].Count })
	return out
}
