// Package monitoring_test checks the Prometheus alerting rules and the
// Grafana dashboard in monitoring/ (docs/operations.md, "Alerts"):
// promtool validates and unit-tests the rules, and every series the
// rules, their tests and the dashboard name must be one a real atrestd
// exposes (testdata/scrape.txt, from TestScrapeMatchesGolden).
package monitoring_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/atrest/atrest/internal/testutil"
)

const (
	rulesFile     = "atrest.rules.yml"
	rulesTestFile = "atrest.rules.test.yml"
	dashboardFile = "atrest-dashboard.json"
)

// The labels Prometheus adds to every scraped series, and the histogram
// bucket label, which the golden file holds but aggregations name freely.
var scrapeLabels = map[string]bool{"job": true, "instance": true}

func TestPromtool(t *testing.T) {
	promtool := testutil.RequireCommand(t, "promtool", "prometheus")
	for _, args := range [][]string{{"check", "rules", rulesFile}, {"test", "rules", rulesTestFile}} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// Every alert in the rules has a test case in which it fires and one in
// which it does not.
func TestEveryAlertFiresAndStaysQuiet(t *testing.T) {
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	readYAML(t, rulesTestFile, &tests)
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, r := range readRules(t) {
		if !fires[r.Alert] || !quiet[r.Alert] {
			t.Errorf("alert %s: a case that fires: %v, one that does not: %v", r.Alert, fires[r.Alert], quiet[r.Alert])
		}
	}
}

// The rules and their test series use only what atrestd exposes.
func TestRulesUseExposedSeries(t *testing.T) {
	g := loadGolden(t)
	rules := readRules(t)
	if len(rules) == 0 {
		t.Fatal("no rules")
	}
	for _, r := range rules {
		for _, err := range g.checkExpr(r.Expr) {
			t.Errorf("alert %s: %v", r.Alert, err)
		}
	}
	var tests struct {
		Tests []struct {
			InputSeries []struct {
				Series string `yaml:"series"`
			} `yaml:"input_series"`
		} `yaml:"tests"`
	}
	readYAML(t, rulesTestFile, &tests)
	for _, tc := range tests.Tests {
		for _, s := range tc.InputSeries {
			if !g.series[identity(s.Series)] {
				t.Errorf("test series %s: atrestd exposes no such series (%s)", s.Series, goldenScrape)
			}
		}
	}
}

// The dashboard is valid Grafana JSON whose every query uses only what
// atrestd exposes, through the data source variable.
func TestDashboard(t *testing.T) {
	g := loadGolden(t)
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	}
	var d struct {
		UID           string `json:"uid"`
		Title         string `json:"title"`
		SchemaVersion int    `json:"schemaVersion"`
		Templating    struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID         int    `json:"id"`
			Title      string `json:"title"`
			Type       string `json:"type"`
			Datasource struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			GridPos struct{ X, Y, W, H int } `json:"gridPos"`
			Targets []target                 `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.UID == "" || d.Title == "" || d.SchemaVersion == 0 || len(d.Panels) == 0 {
		t.Fatalf("%s: uid %q, title %q, schemaVersion %d, %d panels", dashboardFile, d.UID, d.Title, d.SchemaVersion, len(d.Panels))
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if q, ok := v.Query.(map[string]any); ok {
			for _, err := range g.checkExpr(strings.TrimSuffix(strings.TrimPrefix(q["query"].(string), "label_values("), ")")) {
				t.Errorf("variable %s: %v", v.Name, err)
			}
		}
	}
	if !vars["datasource"] {
		t.Error("no datasource variable: the dashboard would be tied to one Prometheus")
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel %q: id %d used twice", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: data source %q, want ${datasource}", p.Title, p.Datasource.UID)
		}
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside Grafana's 24 columns", p.Title, p.GridPos)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, err := range g.checkExpr(tg.Expr) {
				t.Errorf("panel %q, query %s: %v", p.Title, tg.RefID, err)
			}
			for _, v := range regexp.MustCompile(`\$(\w+)`).FindAllStringSubmatch(tg.Expr, -1) {
				if !vars[v[1]] && !strings.HasPrefix(v[1], "__") {
					t.Errorf("panel %q, query %s: variable $%s is not defined", p.Title, tg.RefID, v[1])
				}
			}
		}
	}
}

type rule struct {
	Alert string `yaml:"alert"`
	Expr  string `yaml:"expr"`
}

func readRules(t *testing.T) []rule {
	t.Helper()
	var f struct {
		Groups []struct {
			Rules []rule `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, rulesFile, &f)
	var rules []rule
	for _, g := range f.Groups {
		rules = append(rules, g.Rules...)
	}
	return rules
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// golden is what testdata/scrape.txt says atrestd exposes: each series
// (name and labels, job and instance left out) and, per metric name,
// each label's values.
type golden struct {
	series map[string]bool
	labels map[string]map[string]map[string]bool // metric → label → values
	all    map[string]bool                       // every label name
}

func loadGolden(t *testing.T) *golden {
	t.Helper()
	g := &golden{series: map[string]bool{}, labels: map[string]map[string]map[string]bool{}, all: map[string]bool{}}
	for _, l := range readGolden(t) {
		g.series[l] = true
		name, labels := parseSeries(l)
		if g.labels[name] == nil {
			g.labels[name] = map[string]map[string]bool{}
		}
		for k, v := range labels {
			if g.labels[name][k] == nil {
				g.labels[name][k] = map[string]bool{}
			}
			g.labels[name][k][v] = true
			g.all[k] = true
		}
	}
	return g
}

var (
	seriesRE  = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?$`)
	matcherRE = regexp.MustCompile(`(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"`)
	selectRE  = regexp.MustCompile(`\b(atrest_\w+)\b(\{[^}]*\})?`)
	groupRE   = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	plainAlts = regexp.MustCompile(`^[\w+.|<>-]+$`)
)

// parseSeries splits a series selector without operators
// (name{a="x",b="y"}) into its name and labels.
func parseSeries(s string) (string, map[string]string) {
	m := seriesRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return "", nil
	}
	labels := map[string]string{}
	for _, lm := range matcherRE.FindAllStringSubmatch(m[2], -1) {
		labels[lm[1]] = lm[3]
	}
	return m[1], labels
}

// identity is a test series as the golden file would write it: job and
// instance dropped, the volume UUID replaced, labels in atrestd's order.
func identity(s string) string {
	name, labels := parseSeries(s)
	var keys []string
	for k := range labels {
		if !scrapeLabels[k] {
			keys = append(keys, k)
		}
	}
	// The client library writes labels sorted by name, le last.
	sort.Slice(keys, func(i, j int) bool {
		if keys[i] == "le" || keys[j] == "le" {
			return keys[j] == "le" && keys[i] != "le"
		}
		return keys[i] < keys[j]
	})
	var parts []string
	for _, k := range keys {
		v := labels[k]
		if k == "volume" {
			v = "<uuid>"
		}
		parts = append(parts, k+`="`+v+`"`)
	}
	if len(parts) == 0 {
		return name
	}
	return name + "{" + strings.Join(parts, ",") + "}"
}

// checkExpr reports every metric, label or label value in a PromQL
// expression that atrestd does not expose. Regular-expression matchers
// are checked alternative by alternative when they are plain words.
func (g *golden) checkExpr(expr string) []error {
	var errs []error
	sels := selectRE.FindAllStringSubmatch(expr, -1)
	if len(sels) == 0 {
		errs = append(errs, fmt.Errorf("%q uses no atrest_ metric", expr))
	}
	for _, s := range sels {
		labels, ok := g.labels[s[1]]
		if !ok {
			errs = append(errs, fmt.Errorf("atrestd exposes no metric %s", s[1]))
			continue
		}
		for _, m := range matcherRE.FindAllStringSubmatch(s[2], -1) {
			name, op, val := m[1], m[2], m[3]
			if scrapeLabels[name] {
				continue
			}
			values, ok := labels[name]
			if !ok {
				errs = append(errs, fmt.Errorf("%s has no label %s", s[1], name))
				continue
			}
			alts := []string{val}
			if op == "=~" || op == "!~" {
				if !plainAlts.MatchString(val) {
					continue
				}
				alts = strings.Split(val, "|")
			}
			for _, a := range alts {
				if !values[a] {
					errs = append(errs, fmt.Errorf("%s{%s}: atrestd never exposes %s=%q", s[1], m[0], name, a))
				}
			}
		}
	}
	for _, grp := range groupRE.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(grp[1], ",") {
			if l = strings.TrimSpace(l); l != "" && !scrapeLabels[l] && !g.all[l] {
				errs = append(errs, fmt.Errorf("%q groups by %s, a label no atrestd series has", expr, l))
			}
		}
	}
	return errs
}
