package httpapi

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are counts and latencies only. Label values come from fixed sets
// (outcome codes, colours, route patterns), never from a request's content
// or origin (invariant 7).
type Metrics struct {
	reg         *prometheus.Registry
	redemptions *prometheus.CounterVec
	tokens      *prometheus.CounterVec
	latency     prometheus.Histogram
}

// NewMetrics registers the issuer's metrics on a fresh registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		redemptions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "healthcode_redemptions_total",
			Help: "Redemption requests by outcome (ok or the error code).",
		}, []string{"outcome"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "healthcode_tokens_issued_total",
			Help: "Colour tokens issued, by colour.",
		}, []string{"colour"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "healthcode_redemption_duration_seconds",
			Help:    "Time to answer POST /v1/tokens.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
	}
	m.reg.MustRegister(m.redemptions, m.tokens, m.latency,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is the registry behind /metrics.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// HTTPHandler serves the Prometheus text format.
func (m *Metrics) HTTPHandler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
