"""Arrowhead's own Python client (arrowhead-client 0.4.4a0, unmodified) against a gwe hub in
Arrowhead's insecure mode or its certificate mode: a third-party provider registers a
service of its own and a consumer finds, orchestrates and consumes it; the consumer then
orchestrates and consumes the hub's own services (cmd, ctrlpoll, ctrlupdate, batch); the
provider unregisters.

Run by hub/tests/arrowhead_client.rs:
  python3 arrowhead_story.py HUB_HOST HUB_PORT PORT [CERT_DIR SR_PORT ORCH_PORT AUTH_PORT]
(PORT: a free port for the provider, PORT+1 for the consumer). With CERT_DIR (ca.pem and
SYSTEM.pem/SYSTEM.key for thermometer and dashboard, issued by the cloud's CA) every call
is HTTPS with the system's certificate, the provider serves HTTPS and asks for the
consumer's, and the core systems are reached on their own ports (the hub's
--arrowhead-ports). Prints one JSON line per step; exits non-zero on the first failure. The
client's own bugs are worked around here only, and named where they are.
"""
import json
import socket
import sys
import threading
import time

from arrowhead_client.client.implementations import SyncClient
from arrowhead_client.client import core_service_responses as responses
from arrowhead_client.client.core_service_forms import client as forms
from arrowhead_client.service import Service, ServiceInterface

hub_host, hub_port, provider_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
secure = len(sys.argv) > 4
if secure:
    cert_dir = sys.argv[4]
    sr_port, orch_port, auth_port = (int(p) for p in sys.argv[5:8])
else:
    sr_port = orch_port = auth_port = hub_port
config = {
    'service_registry': {'system_name': 'service_registry', 'address': hub_host, 'port': sr_port},
    'orchestrator': {'system_name': 'orchestrator', 'address': hub_host, 'port': orch_port},
    'authorization': {'system_name': 'authorization', 'address': hub_host, 'port': auth_port},
}
policy = 'CERTIFICATE' if secure else 'NOT_SECURE'


def certs(system):
    """The client's key, certificate and CA file arguments for one system."""
    if not secure:
        return {}
    return {'keyfile': f'{cert_dir}/{system}.key', 'certfile': f'{cert_dir}/{system}.pem',
            'cafile': f'{cert_dir}/ca.pem'}


def step(name, **facts):
    print(json.dumps({'step': name, **facts}), flush=True)


provider = SyncClient.create(system_name='thermometer', address='127.0.0.1', port=provider_port,
                             config=config, log_mode='error', **certs('thermometer'))


@provider.provided_service(service_definition='temperature', service_uri='temperature', protocol='HTTP',
                           method='GET', payload_format='JSON', access_policy=policy)
def temperature(request):
    return {'celsius': 21.5}


# The provider registers its service and serves it (its Flask server, in a thread).
threading.Thread(target=provider.run_forever, daemon=True).start()
deadline = time.time() + 30
while True:
    try:
        socket.create_connection(('127.0.0.1', provider_port), timeout=1).close()
        break
    except OSError:
        if time.time() > deadline:
            raise SystemExit('the provider did not come up')
        time.sleep(0.1)
step('registered', provided=[r.provided_service.service_definition for r in provider.registration_rules
                              if r.is_provided])
# In certificate mode the provider fetched the authorization system's public key first.
if secure:
    assert provider.auth_authentication_info.startswith('-----BEGIN PUBLIC KEY-----'), provider.auth_authentication_info
    assert all(r.is_provided for r in provider.registration_rules), 'the provider could not register'

consumer = SyncClient.create(system_name='dashboard', address='127.0.0.1', port=provider_port + 1,
                             config=config, log_mode='error', **certs('dashboard'))
consumer.setup()

# Query the registry with the client's own form and response reader.
query = forms.ServiceQueryForm.make(
    Service('temperature', interface=ServiceInterface('HTTP', 'SECURE' if secure else 'INSECURE', 'JSON'),
            access_policy=policy))
found = responses.process_service_query(consumer.consume_service('service-query', json=query.dto()))
step('queried', providers=[[s.service_definition, sys_.system_name, sys_.port] for s, sys_ in found])
assert found and found[0][1].system_name == 'thermometer', found
if secure:
    # The provider's public key from its certificate is in the registry, for consumers to check.
    entry = consumer.consume_service('service-query', json=query.dto()).read_json()['serviceQueryData'][0]
    assert entry['provider']['authenticationInfo'] == provider.system.authentication_info != '', entry

# Orchestrate and consume the provider's service.
consumer.add_orchestration_rule('temperature', 'GET')
reading = consumer.consume_service('temperature').read_json()
step('consumed', reading=reading)
assert reading == {'celsius': 21.5}, reading

# The hub's own services: an operator command for this system through `cmd`, fetched by
# `ctrlpoll`, the state reported by `ctrlupdate`, data points through `batch`.
for definition, method in [('cmd', 'POST'), ('ctrlpoll', 'GET'), ('ctrlupdate', 'POST'), ('batch', 'POST')]:
    consumer.add_orchestration_rule(definition, method)
# The hub's `cmd` names the gateway in its path (`edge/cmd/SYSTEM`): the client has no
# way to add to a service's URI, so the test adds it to the rule the client made.
cmd_rule = consumer.orchestration_rules.get('cmd')
cmd_rule._consumed_service.service_uri += '/dashboard'
issued = consumer.consume_service('cmd', json={'id': 'ah-1', 'config': {'rate': 3}})
step('cmd', status=issued.status_code)
assert issued.status_code == 201, issued.payload

polled = consumer.consume_service('ctrlpoll')
command = polled.read_json()
step('ctrlpoll', status=polled.status_code, command=command)
assert polled.status_code == 200 and command['id'] == 'ah-1', command

state = {'system': 'dashboard', 'state': {'system': 'dashboard', 'config': {'rate': 3}, 'config_version': 1,
                                           'batch': {},
                                           'last_command': {'id': 'ah-1', 'result': 'applied', 'at_ms': 1}}}
updated = consumer.consume_service('ctrlupdate', json=state)
step('ctrlupdate', status=updated.status_code)
assert updated.status_code == 204, updated.payload

batch = {'system': 'dashboard', 'batch_id': 'ah-b1', 'points': [{'n': 'temp', 't': 1700000000, 'v': '21.5'}]}
stored = consumer.consume_service('batch', json=batch)
step('batch', status=stored.status_code, ack=stored.read_json())
assert stored.status_code == 200 and stored.read_json()['stored'] == 1, stored.payload

# The provider unregisters its service: it is no longer found.
provider._unregister_all_services()
found = responses.process_service_query(consumer.consume_service('service-query', json=query.dto()))
step('unregistered', providers=len(found))
assert not found, found

if secure:
    # A system's certificate speaks for that system only: the consumer cannot register a
    # service as the provider, nor orchestrate under the provider's name.
    other = forms.ServiceRegistrationForm.make(
        Service('temperature', 'fake', ServiceInterface('HTTP', 'SECURE', 'JSON'), 'CERTIFICATE'), provider.system)
    r = consumer.consume_service('service-register', json=other.dto())
    step('refused-other-system', status=r.status_code, error=r.read_json()['errorMessage'])
    assert r.status_code == 401 and 'certificate' in r.read_json()['errorMessage'], r.payload
    posing = forms.OrchestrationForm.make(provider.system, Service('temperature', interface=ServiceInterface('', '', '')))
    r = consumer.consume_service('orchestration-service', json=posing.dto())
    step('refused-posing', status=r.status_code)
    assert r.status_code == 401 and 'certificate' in r.read_json()['errorMessage'], r.payload

# A bad registration gets Arrowhead's JSON error, which the client reads.
bad = forms.ServiceRegistrationForm.make(
    Service('broken', 'x', ServiceInterface('HTTP', 'SECURE' if secure else 'INSECURE', 'JSON')),
    consumer.system if secure else provider.system, end_of_validity='yesterday')
try:
    responses.process_service_register(consumer.consume_service('service-register', json=bad.dto()))
    raise SystemExit('a registration with a bad endOfValidity was taken')
except Exception as e:  # the client raises its CoreServiceInputError with the hub's errorMessage
    step('refused', error=str(e))
    assert 'endOfValidity' in str(e), e
step('done')
