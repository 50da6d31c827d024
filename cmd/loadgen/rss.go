package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// readRSS returns VmRSS of pid in KiB, from /proc/PID/status.
func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	return parseVmRSS(b)
}

func parseVmRSS(status []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("VmRSS line %q: want \"<n> kB\"", sc.Text())
		}
		return strconv.ParseInt(f[0], 10, 64)
	}
	return 0, fmt.Errorf("no VmRSS line in the process status")
}

type rssSampler struct {
	pid  int
	rest int64
	quit chan struct{}
	done chan struct{}
	got  []int64
	err  error
}

// startRSS samples VmRSS every second until stop.
func startRSS(pid int, rest int64) *rssSampler {
	s := &rssSampler{pid: pid, rest: rest, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-s.quit:
				return
			case <-tick.C:
				v, err := readRSS(s.pid)
				if err != nil {
					s.err = err
					return
				}
				s.got = append(s.got, v)
			}
		}
	}()
	return s
}

// stop takes the end sample and summarises.
func (s *rssSampler) stop() (*Memory, error) {
	close(s.quit)
	<-s.done
	if s.err != nil {
		return nil, s.err
	}
	end, err := readRSS(s.pid)
	if err != nil {
		return nil, err
	}
	return summarise(s.rest, s.got, end), nil
}

// summarise compares the first and second halves of the samples taken under
// load (an odd middle sample goes to neither).
func summarise(rest int64, samples []int64, end int64) *Memory {
	m := &Memory{Rest: rest, End: end, Peak: max(rest, end), Samples: samples}
	for _, v := range samples {
		m.Peak = max(m.Peak, v)
	}
	h := len(samples) / 2
	if h == 0 {
		m.FirstHalfAvg, m.SecondHalfAvg = float64(end), float64(end)
		m.Flat = true
		return m
	}
	m.FirstHalfAvg = avg(samples[:h])
	m.SecondHalfAvg = avg(samples[len(samples)-h:])
	m.GrowthPercent = 100 * (m.SecondHalfAvg - m.FirstHalfAvg) / m.FirstHalfAvg
	m.Flat = m.SecondHalfAvg <= m.FirstHalfAvg*(1+flatTolerance)
	return m
}

func avg(v []int64) float64 {
	var s float64
	for _, x := range v {
		s += float64(x)
	}
	return s / float64(len(v))
}
