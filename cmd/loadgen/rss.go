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

// memSample is one reading of /proc/PID/status, in KiB: VmRSS is RssAnon
// (heap, stacks) plus RssFile (mapped files: for the issuer, mostly the
// bbolt file, which grows with the records it holds) plus RssShmem.
type memSample struct{ RSS, Anon, File int64 }

// readRSS reads the memory lines of pid's status.
func readRSS(pid int) (memSample, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return memSample{}, err
	}
	return parseStatus(b)
}

func parseStatus(status []byte) (memSample, error) {
	var m memSample
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		var dst *int64
		switch name {
		case "VmRSS":
			dst = &m.RSS
		case "RssAnon":
			dst = &m.Anon
		case "RssFile":
			dst = &m.File
		}
		if !ok || dst == nil {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return m, fmt.Errorf("%s line %q: want \"<n> kB\"", name, sc.Text())
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return m, fmt.Errorf("%s line %q: %v", name, sc.Text(), err)
		}
		*dst = v
		found++
	}
	if found != 3 {
		return m, fmt.Errorf("process status lacks VmRSS, RssAnon or RssFile")
	}
	return m, nil
}

type rssSampler struct {
	pid   int
	every time.Duration
	rest  memSample
	quit  chan struct{}
	done  chan struct{}
	got   []memSample
	err   error
}

// startRSS samples the issuer's memory every interval until stop.
func startRSS(pid int, rest memSample, every time.Duration) *rssSampler {
	s := &rssSampler{pid: pid, every: every, rest: rest, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(every)
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
// load (an odd middle sample goes to neither), for VmRSS and for RssAnon.
func summarise(rest memSample, samples []memSample, end memSample) *Memory {
	m := &Memory{Rest: rest.RSS, End: end.RSS, Peak: max(rest.RSS, end.RSS),
		RestAnon: rest.Anon, EndAnon: end.Anon, PeakAnon: max(rest.Anon, end.Anon),
		RestFile: rest.File, EndFile: end.File, PeakFile: max(rest.File, end.File)}
	rss := make([]int64, len(samples))
	anon := make([]int64, len(samples))
	for n, v := range samples {
		m.Peak = max(m.Peak, v.RSS)
		m.PeakAnon = max(m.PeakAnon, v.Anon)
		m.PeakFile = max(m.PeakFile, v.File)
		rss[n], anon[n] = v.RSS, v.Anon
	}
	m.Samples = rss
	m.FirstHalfAvg, m.SecondHalfAvg, m.GrowthPercent, m.Flat = halves(rss, end.RSS)
	m.AnonFirstHalfAvg, m.AnonSecondHalfAvg, m.AnonGrowthPercent, m.AnonFlat = halves(anon, end.Anon)
	return m
}

func halves(v []int64, end int64) (first, second, growth float64, flat bool) {
	h := len(v) / 2
	if h == 0 {
		return float64(end), float64(end), 0, true
	}
	first, second = avg(v[:h]), avg(v[len(v)-h:])
	growth = 100 * (second - first) / first
	return first, second, growth, second <= first*(1+flatTolerance)
}

func avg(v []int64) float64 {
	var s float64
	for _, x := range v {
		s += float64(x)
	}
	return s / float64(len(v))
}
