module github.com/atrest/atrest

go 1.25.1

require golang.org/x/sys v0.38.0

require go.yaml.in/yaml/v3 v3.0.4 // indirect
