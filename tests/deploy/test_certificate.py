"""Certificate and DNS, with and without a Route 53 hosted zone: which resources a deploy
creates, which certificate each TLS endpoint serves, and what CloudFormation refuses up front
(the template's Rules). cfn-lint and ``sam validate`` check the template itself (test_lint.py)."""

import re

import pytest

from tests.deploy import cfn

ZONE = "Z0123456789ABCDEFGHIJ"
CERT = "arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d-0000-4000-8000-000000000000"
ALWAYS = {"AppSecret", "EdgeLoadBalancer", "EdgeHttpsListener", "HttpApi"}


def _listener_certificate(params):
    (certificate,) = cfn.props("EdgeHttpsListener")["Certificates"]
    return cfn.evaluate(certificate["CertificateArn"], params)


def test_with_a_zone_the_stack_creates_and_validates_the_edge_certificate_and_record():
    params = cfn.parameter_values(EdgeDomainName="edge.example.com", EdgeHostedZoneId=ZONE)
    assert cfn.failed_rules(params) == []
    created = cfn.created_resources(params)
    assert {"EdgeCertificate", "EdgeDnsRecord"} | ALWAYS <= created
    assert _listener_certificate(params) == {"Ref": "EdgeCertificate"}
    certificate = cfn.props("EdgeCertificate")
    assert certificate["ValidationMethod"] == "DNS"
    assert certificate["DomainName"] == {"Ref": "EdgeDomainName"}
    assert certificate["DomainValidationOptions"] == [
        {"DomainName": {"Ref": "EdgeDomainName"}, "HostedZoneId": {"Ref": "EdgeHostedZoneId"}}
    ]
    record = cfn.props("EdgeDnsRecord")
    assert record["Name"] == {"Ref": "EdgeDomainName"}
    assert record["AliasTarget"]["DNSName"] == {"Fn::GetAtt": ["EdgeLoadBalancer", "DNSName"]}
    url = cfn.evaluate(cfn.TEMPLATE["Outputs"]["EdgeWebSocketUrl"]["Value"], params)
    assert url == {"Fn::Sub": "wss://${EdgeDomainName}/media"}


def test_without_a_zone_an_issued_certificate_is_used_and_nothing_is_created_in_dns():
    params = cfn.parameter_values(EdgeDomainName="edge.example.com", EdgeCertificateArn=CERT)
    assert cfn.failed_rules(params) == []
    created = cfn.created_resources(params)
    assert created >= ALWAYS
    assert not {"EdgeCertificate", "EdgeDnsRecord", "ApiCertificate", "ApiDnsRecord"} & created
    assert _listener_certificate(params) == CERT


def test_a_zone_and_an_existing_certificate_use_the_certificate_and_add_the_record():
    params = cfn.parameter_values(
        EdgeDomainName="edge.example.com", EdgeHostedZoneId=ZONE, EdgeCertificateArn=CERT
    )
    created = cfn.created_resources(params)
    assert "EdgeDnsRecord" in created
    assert "EdgeCertificate" not in created
    assert _listener_certificate(params) == CERT


@pytest.mark.parametrize(
    "given",
    [
        {},  # neither a certificate nor a zone
        {"EdgeHostedZoneId": ZONE},  # a zone but no name to certify
        {"EdgeDomainName": "edge.example.com"},  # a name but neither
    ],
)
def test_an_edge_without_any_way_to_a_certificate_is_refused_before_anything_is_created(given):
    assert "EdgeNeedsCertificate" in cfn.failed_rules(cfn.parameter_values(**given))


def test_the_api_domain_gets_its_certificate_record_and_url_from_the_zone():
    params = cfn.parameter_values(
        EdgeCertificateArn=CERT, ApiDomainName="api.example.com", ApiHostedZoneId=ZONE
    )
    assert cfn.failed_rules(params) == []
    created = cfn.created_resources(params)
    assert {"ApiCertificate", "ApiDomain", "ApiDomainMapping", "ApiDnsRecord"} <= created
    (config,) = cfn.props("ApiDomain")["DomainNameConfigurations"]
    assert cfn.evaluate(config["CertificateArn"], params) == {"Ref": "ApiCertificate"}
    assert cfn.props("ApiCertificate")["DomainValidationOptions"] == [
        {"DomainName": {"Ref": "ApiDomainName"}, "HostedZoneId": {"Ref": "ApiHostedZoneId"}}
    ]
    outputs = cfn.TEMPLATE["Outputs"]
    assert cfn.evaluate(outputs["ApiUrl"]["Value"], params) == {
        "Fn::Sub": "https://${ApiDomainName}"
    }


def test_an_api_domain_without_certificate_or_zone_is_refused():
    params = cfn.parameter_values(EdgeCertificateArn=CERT, ApiDomainName="api.example.com")
    assert "ApiDomainNeedsCertificate" in cfn.failed_rules(params)


def test_without_an_api_domain_the_api_url_is_api_gateways_own():
    params = cfn.parameter_values(EdgeCertificateArn=CERT)
    value = cfn.evaluate(cfn.TEMPLATE["Outputs"]["ApiUrl"]["Value"], params)
    assert value == {"Fn::Sub": "https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"}
    assert not {"ApiDomain", "ApiCertificate", "ApiDnsRecord"} & cfn.created_resources(params)


@pytest.mark.parametrize(
    ("parameter", "good", "bad"),
    [
        ("EdgeHostedZoneId", ZONE, "example.com"),
        ("EdgeCertificateArn", CERT, "arn:aws:acm:us-east-1:123:certificate"),
        ("EdgeDomainName", "edge.example.com", "https://edge.example.com"),
    ],
)
def test_parameter_patterns_catch_pasting_the_wrong_thing(parameter, good, bad):
    pattern = cfn.TEMPLATE["Parameters"][parameter]["AllowedPattern"]
    assert re.fullmatch(pattern, good)
    assert re.fullmatch(pattern, "")
    assert not re.fullmatch(pattern, bad)
