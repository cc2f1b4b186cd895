package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// report is the outcome of a run: an ordered list of figures printed as a
// table for people, then as one JSON object on the last line for scripts.
type report struct {
	fields []reportField
}

type reportField struct {
	key   string // JSON key
	label string // table label; "" keeps it out of the table
	value any
}

func (r *report) add(key, label string, value any) {
	r.fields = append(r.fields, reportField{key, label, value})
}

// print writes the table (unless quiet) and the JSON line to w.
func (r *report) print(w io.Writer, quiet bool) error {
	if !quiet {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, f := range r.fields {
			if f.label != "" {
				fmt.Fprintf(tw, "%s\t%s\n", f.label, human(f.value))
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	var sb strings.Builder
	sb.WriteByte('{')
	for i, f := range r.fields {
		if i > 0 {
			sb.WriteByte(',')
		}
		k, _ := json.Marshal(f.key)
		v, err := json.Marshal(jsonValue(f.value))
		if err != nil {
			return fmt.Errorf("report %s: %w", f.key, err)
		}
		sb.Write(k)
		sb.WriteByte(':')
		sb.Write(v)
	}
	sb.WriteString("}\n")
	_, err := io.WriteString(w, sb.String())
	return err
}

func jsonValue(v any) any {
	switch x := v.(type) {
	case time.Duration:
		return round3(x.Seconds())
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil
		}
		return round3(x)
	}
	return v
}

func human(v any) string {
	switch x := v.(type) {
	case time.Duration:
		return x.Round(time.Millisecond).String()
	case float64:
		if math.IsNaN(x) {
			return "-"
		}
		return fmt.Sprintf("%.3f", x)
	case map[string]float64:
		order := []string{"p50", "p90", "p99", "max", "mean", "count"}
		var parts []string
		for _, k := range order {
			if val, ok := x[k]; ok {
				if k == "count" {
					parts = append(parts, fmt.Sprintf("n=%d", int64(val)))
				} else {
					parts = append(parts, fmt.Sprintf("%s %.2f", k, val))
				}
			}
		}
		return strings.Join(parts, "  ") + " (ms)"
	case map[string]int64:
		if len(x) == 0 {
			return "none"
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%s=%d", k, x[k])
		}
		return strings.Join(parts, " ")
	}
	return fmt.Sprint(v)
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// reasons counts failures by reason; safe for concurrent use.
type reasons struct {
	mu sync.Mutex
	m  map[string]int64
}

func (r *reasons) add(reason string) {
	r.mu.Lock()
	if r.m == nil {
		r.m = map[string]int64{}
	}
	r.m[reason]++
	r.mu.Unlock()
}

func (r *reasons) snapshot() map[string]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int64, len(r.m))
	for k, v := range r.m {
		out[k] = v
	}
	return out
}

// progress writes a one-line status to stderr every second while the run
// lasts, only when stderr is a terminal.
type progress struct {
	stop chan struct{}
	done chan struct{}
}

func startProgress(line func() string) *progress {
	p := &progress{stop: make(chan struct{}), done: make(chan struct{})}
	if !isTerminal(os.Stderr) {
		close(p.done)
		return p
	}
	go func() {
		defer close(p.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				fmt.Fprint(os.Stderr, "\r\033[K")
				return
			case <-t.C:
				fmt.Fprintf(os.Stderr, "\r\033[K%s", line())
			}
		}
	}()
	return p
}

func (p *progress) end() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

var traceMu sync.Mutex

// traceMsg prints a SIP message (or several) to stderr for -trace.
func traceMsg(conn int, dir string, b []byte) {
	traceMu.Lock()
	defer traceMu.Unlock()
	fmt.Fprintf(os.Stderr, "--- conn %d %s\n%s\n", conn, dir, strings.ReplaceAll(string(b), "\r\n", "\n"))
}
