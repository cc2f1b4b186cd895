package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat
// (100 on every Linux architecture Go supports).
const clockTicks = 100

// targetProcs is the system under test as a set of processes: the PIDs
// given with -pids and all their descendants (Kamailio forks its workers),
// found again at each sample.
type targetProcs struct {
	roots []int
}

func parsePIDs(s string) (targetProcs, error) {
	var t targetProcs
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 0 {
			return t, fmt.Errorf("-pids: %q is not a process id", f)
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/stat", pid)); err != nil {
			return t, fmt.Errorf("-pids: process %d: %w", pid, err)
		}
		t.roots = append(t.roots, pid)
	}
	return t, nil
}

func (t targetProcs) enabled() bool { return len(t.roots) > 0 }

// procStat is the part of /proc/PID/stat we use.
type procStat struct {
	ppid int
	cpu  time.Duration // utime + stime, all threads
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// The command name is in parentheses and may contain spaces: fields
	// are counted after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ppid, _ := strconv.Atoi(f[1])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return procStat{ppid: ppid, cpu: time.Duration(ut+st) * time.Second / clockTicks}, nil
}

// pids returns the roots and their live descendants.
func (t targetProcs) pids() []int {
	if !t.enabled() {
		return nil
	}
	parent := map[int]int{}
	ents, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, e := range ents {
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(e)))
		if err != nil {
			continue
		}
		if st, err := readStat(pid); err == nil {
			parent[pid] = st.ppid
		}
	}
	in := map[int]bool{}
	for _, r := range t.roots {
		in[r] = true
	}
	var out []int
	for pid := range parent {
		for p, depth := pid, 0; p > 1 && depth < 16; p, depth = parent[p], depth+1 {
			if in[p] {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// cpu is the CPU time (user + system) used so far by the target's
// processes. A process that exits between two samples takes its time with it.
func (t targetProcs) cpu() time.Duration {
	var sum time.Duration
	for _, pid := range t.pids() {
		if st, err := readStat(pid); err == nil {
			sum += st.cpu
		}
	}
	return sum
}

// memory is the target's proportional set size and resident set size
// (from /proc/PID/smaps_rollup), summed over its processes, in KiB. PSS
// counts shared pages (Kamailio's shared memory, libraries) once in total.
func (t targetProcs) memory() (pssKiB, rssKiB int64) {
	for _, pid := range t.pids() {
		f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "Pss:"):
				pssKiB += kib(line)
			case strings.HasPrefix(line, "Rss:"):
				rssKiB += kib(line)
			}
		}
		f.Close()
	}
	return pssKiB, rssKiB
}

func kib(line string) int64 {
	f := strings.Fields(line)
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.ParseInt(f[1], 10, 64)
	return n
}

// selfCPU is this process's CPU time (user + system).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// hostCPU is the machine's CPU time so far, summed over all CPUs (first
// line of /proc/stat): busy (user, nice, system, irq, softirq) and stolen
// by the hypervisor.
func hostCPU() (busy, steal time.Duration) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0
	}
	tick := func(i int) time.Duration {
		n, _ := strconv.ParseInt(f[i], 10, 64)
		return time.Duration(n) * time.Second / clockTicks
	}
	return tick(1) + tick(2) + tick(3) + tick(6) + tick(7), tick(8)
}

// cpuWindow measures who used the CPU during a load: the target, umload,
// the other processes of the setup (-other-pids, e.g. the backend), and
// everything else on the machine ("foreign": other users of a shared box,
// which make a run noisy).
type cpuWindow struct {
	procs, others      targetProcs
	target, self, othr time.Duration
	host, steal        time.Duration
	start              time.Time
}

func startCPU(procs, others targetProcs) *cpuWindow {
	w := &cpuWindow{procs: procs, others: others}
	w.target, w.self, w.othr = procs.cpu(), selfCPU(), others.cpu()
	w.host, w.steal = hostCPU()
	w.start = time.Now()
	return w
}

// cpuSpent is what a window measured.
type cpuSpent struct {
	target, self, others, foreign, steal time.Duration
	wall                                 time.Duration
}

func (w *cpuWindow) stop() cpuSpent {
	var s cpuSpent
	s.target, s.self, s.others = w.procs.cpu()-w.target, selfCPU()-w.self, w.others.cpu()-w.othr
	host, steal := hostCPU()
	s.steal = steal - w.steal
	s.foreign = max(0, host-w.host-s.target-s.self-s.others)
	s.wall = time.Since(w.start)
	return s
}

// add reports the window; n is the count of work units (calls,
// connections) and unit its name in keys ("call") and labels.
func (s cpuSpent) add(rep *report, procs, others targetProcs) {
	if procs.enabled() {
		rep.add("target_cpu_s", "target CPU", s.target)
	}
	rep.add("load_cpu_s", "umload CPU", s.self)
	if others.enabled() {
		rep.add("other_cpu_s", "other processes of the setup (-other-pids) CPU", s.others)
	}
	rep.add("foreign_cpu_s", "CPU used by anything else on the machine", s.foreign)
	rep.add("foreign_cpu_share", "... as a share of the machine", round3(s.foreign.Seconds()/(s.wall.Seconds()*float64(numCPU()))))
	rep.add("steal_s", "CPU stolen by the hypervisor", s.steal)
}

func numCPU() int { return runtime.NumCPU() }
