// Makes the users and ACLs of the secured test broker of scripts/services.sh
// (up --secure) through Kafka's admin API, all in one JVM: Kafka's own CLI
// tools would take one JVM per user and mechanism (a SCRAM credential cannot
// be altered twice in one request) and one per ACL line, a second or two of
// CPU each. services.sh runs it in Java's source-file mode, which needs no
// build step.
//
//   java -cp 'KAFKA_LIB/*' SecureSetup.java BOOTSTRAP DIR TIMEOUT USER... -- ACL...
//
// BOOTSTRAP is the broker's PLAINTEXT listener, whose principal (ANONYMOUS)
// is a super user; it may still be starting: TIMEOUT is how many seconds
// the admin client keeps trying. Each USER gets SCRAM-SHA-256 and SCRAM-SHA-512
// credentials for the password in DIR/USER.password (read here, so it is on
// no command line). Each ACL is one argument holding the options of one
// `kafka-acls.sh --add`: --allow-principal P, --operation OP (repeated),
// --topic T, --transactional-id T, --group G or --cluster, and
// --resource-pattern-type literal|prefixed. Creating what exists already
// changes nothing, so it can run again.

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Properties;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialAlteration;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class SecureSetup {
    // Kafka's default for SCRAM-SHA-256/512, as kafka-configs.sh uses it.
    static final int ITERATIONS = 4096;

    public static void main(String[] args) throws Exception {
        if (args.length < 3) {
            throw new IllegalArgumentException("usage: SecureSetup BOOTSTRAP DIR TIMEOUT USER... -- ACL...");
        }
        String bootstrap = args[0];
        Path dir = Path.of(args[1]);
        List<String> users = new ArrayList<>();
        List<AclBinding> acls = new ArrayList<>();
        long timeoutMs = Long.parseLong(args[2]) * 1000;
        int i = 3;
        for (; i < args.length && !args[i].equals("--"); i++) {
            users.add(args[i]);
        }
        for (i++; i < args.length; i++) {
            acls.addAll(parseAcl(args[i]));
        }

        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, String.valueOf(timeoutMs));
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, String.valueOf(Math.min(timeoutMs, 30000)));
        try (Admin admin = Admin.create(props)) {
            // One request per mechanism: a request may alter a user once.
            for (ScramMechanism mech : new ScramMechanism[] {ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512}) {
                List<UserScramCredentialAlteration> alts = new ArrayList<>();
                for (String user : users) {
                    String pw = Files.readString(dir.resolve(user + ".password"), StandardCharsets.UTF_8).strip();
                    alts.add(new UserScramCredentialUpsertion(user, new ScramCredentialInfo(mech, ITERATIONS), pw));
                }
                admin.alterUserScramCredentials(alts).all().get();
                System.out.println(mech + " credentials: " + String.join(", ", users));
            }
            admin.createAcls(acls).all().get();
            for (AclBinding b : acls) {
                System.out.println("ACL: " + b);
            }
        }
    }

    // parseAcl turns the options of one `kafka-acls.sh --add` into bindings,
    // one per operation.
    static List<AclBinding> parseAcl(String line) {
        String[] f = line.trim().split("\\s+");
        String principal = null;
        ResourceType type = null;
        String name = null;
        PatternType pattern = PatternType.LITERAL;
        List<AclOperation> ops = new ArrayList<>();
        for (int i = 0; i < f.length; i++) {
            switch (f[i]) {
                case "--allow-principal" -> principal = f[++i];
                case "--operation" -> ops.add(AclOperation.fromString(camelToEnum(f[++i])));
                case "--topic" -> { type = ResourceType.TOPIC; name = f[++i]; }
                case "--transactional-id" -> { type = ResourceType.TRANSACTIONAL_ID; name = f[++i]; }
                case "--group" -> { type = ResourceType.GROUP; name = f[++i]; }
                case "--cluster" -> { type = ResourceType.CLUSTER; name = "kafka-cluster"; }
                case "--resource-pattern-type" -> pattern = PatternType.fromString(f[++i].toUpperCase(Locale.ROOT));
                default -> throw new IllegalArgumentException("ACL " + line + ": unknown option " + f[i]);
            }
        }
        if (principal == null || type == null || ops.isEmpty() || ops.contains(AclOperation.UNKNOWN) || pattern == PatternType.UNKNOWN) {
            throw new IllegalArgumentException("ACL " + line + ": needs --allow-principal, a resource and known operations and pattern type");
        }
        List<AclBinding> out = new ArrayList<>();
        for (AclOperation op : ops) {
            out.add(new AclBinding(new ResourcePattern(type, name, pattern),
                new AccessControlEntry(principal, "*", op, AclPermissionType.ALLOW)));
        }
        return out;
    }

    // camelToEnum: DescribeConfigs -> DESCRIBE_CONFIGS, as kafka-acls.sh reads it.
    static String camelToEnum(String s) {
        return s.replaceAll("([a-z])([A-Z])", "$1_$2").toUpperCase(Locale.ROOT);
    }
}
