module github.com/atrest/atrest

go 1.25.1

require (
	github.com/anatol/devmapper.go v0.0.0-20230829043248-59ac2b9706ba
	go.yaml.in/yaml/v3 v3.0.4
	golang.org/x/sys v0.38.0
)

require golang.org/x/crypto v0.12.0 // indirect
